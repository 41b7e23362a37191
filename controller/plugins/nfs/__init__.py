"""The `nfs` primary storage type."""
