"""`nfs` primary storage: one export shared by every attached host, mounted by each host's
kernel or opened through libnfs (`provider`); on KVM, local storage's qcow2 files under
the export (`kvm`)."""
