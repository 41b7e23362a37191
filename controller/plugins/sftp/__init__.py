"""`sftp` backup storage: an SSH server's directory, reached with a key and a pinned
host key (`provider`); on KVM, hosts copy files between it and their storages over
SFTP (`kvm`)."""
