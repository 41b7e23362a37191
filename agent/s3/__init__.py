"""S3 backup storage on the agent: the bucket as a store of verified objects (`store`)."""
