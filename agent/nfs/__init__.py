"""NFS on the agent: kernel mounts counted per mount point (`mounts`), and libnfs, QEMU's
userspace client, for storages reached without a mount (`libnfs`; the file store on top
of it is `files/nfs.py`)."""
