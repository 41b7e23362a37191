"""SFTP backup storage on the agent: an asyncssh session for the metadata calls and
uploads (`session`), OpenSSH's client for bulk reads (`tools/ssh`), and the directory
its key files live in (`keyfiles`)."""
