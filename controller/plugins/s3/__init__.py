"""`s3` backup storage: images as objects in an S3 bucket."""
