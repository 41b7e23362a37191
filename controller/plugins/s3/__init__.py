"""`s3` backup storage: images as objects in an S3 bucket (`provider`); on KVM, hosts
copy objects between it and their storages (`kvm`)."""
