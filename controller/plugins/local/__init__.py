"""`local` primary storage: a directory on one host's own disk (`provider`); on KVM its
volumes are qcow2 files, root volumes linked clones of the image cache (`kvm`)."""
