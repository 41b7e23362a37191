"""`sftp` backup storage: an SSH server's directory, reached with a key and a pinned
host key."""
