"""`local` primary storage: a directory on one host's own disk."""
