"""KVM backend for NFS: the qcow2 files and linked clones of local storage, under the
export (its mount point, or its `nfs://` URL in libnfs mode), so every attached host
opens them by the same path."""

from __future__ import annotations

from controller.plugins.local.kvm import Qcow2FileBackend
from controller.plugins.nfs.provider import NFS

NFS_KVM = Qcow2FileBackend(NFS)
