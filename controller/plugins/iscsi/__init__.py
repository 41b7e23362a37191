"""`iscsi` primary storage: volumes are LUNs on a storage server running strata-agent in
the storage role, granted to hypervisor hosts one initiator at a time (`provider`); on
KVM, a volume is a raw file or logical volume served as its own target (`kvm`)."""
