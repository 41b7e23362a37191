"""`dir` backup storage: an image store directory that hosts reach by path (`provider`);
on KVM, hosts copy files between it and their storages (`kvm`)."""
