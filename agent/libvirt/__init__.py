"""VMs on volumes: the disk a domain gets for a volume (`disks`), and attaching and
detaching it (`attach`), over the libvirt connection of `agent/tools/libvirt.py`."""
