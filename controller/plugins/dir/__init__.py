"""`dir` backup storage: an image store directory that hosts reach by path."""
