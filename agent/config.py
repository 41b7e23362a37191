"""Agent settings."""

from __future__ import annotations

import ipaddress
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.config import parse_listen
from shared.protocol.enrol import JOIN_TOKEN_FILE, TLS_DIR
from shared.protocol.types import Iqn

DEFAULT_STATE_DIR = "/var/lib/strata/agent"


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = "127.0.0.1:8641"
    debug_listen: str = Field(
        default="127.0.0.1:8642", description="Loopback-only listener for /debug/*."
    )
    state_dir: str = DEFAULT_STATE_DIR
    join_token_file: str | None = Field(
        default=None,
        description="Where the operator puts this host's one-time join token (made by the "
                    "controller); read at enrolment, then deleted. Default: "
                    "state_dir/join-token.")
    command_wait: float = Field(
        default=2.0, ge=0,
        description="How long POST /v1/commands waits for the task before answering 202.",
    )
    shutdown_grace: float = Field(
        default=30, ge=0,
        description="Seconds running tasks get to finish after SIGTERM (no new task is "
                    "taken meanwhile); those still running then are cancelled and "
                    "recorded as interrupted, for the controller to retry.")
    max_image_size: int = Field(default=1 << 40, gt=0,
                                description="Largest image file accepted, in bytes.")
    max_virtual_size: int = Field(default=16 << 40, gt=0,
                                  description="Largest virtual disk size accepted, in bytes.")
    download_allow: list[str] = Field(
        default_factory=list,
        description="If set, the only networks (CIDRs) images may be downloaded from.")
    download_deny: list[str] = Field(
        default_factory=list,
        description="Networks refused for downloads, besides loopback, link-local, "
                    "unspecified addresses and this agent's own listeners.")
    allow_url_credentials: bool = Field(
        default=False, description="Whether image URLs may carry user:password@.")
    qemu_img: str = "qemu-img"
    nfs_timeout: float = Field(
        default=30, gt=0,
        description="Seconds an NFS call may take before it fails as unresponsive.")
    iscsi_target: Literal["tgt", "lio"] | None = Field(
        default=None, description="Serve iSCSI volumes from this host with this target.")
    iscsi_portal: str = Field(default="127.0.0.1:3260",
                              description="The portal initiators reach this host's target at.")
    tgt_control_port: int | None = Field(default=None,
                                         description="tgtd's control port (tgtadm -C).")
    initiator_iqn: Iqn | None = Field(
        default=None, description="This host's initiator name; default: open-iscsi's.")
    initiator_name_file: str = Field(
        default="/etc/iscsi/initiatorname.iscsi",
        description="Where open-iscsi keeps the host's initiator name, read when "
                    "initiator_iqn is not set.")
    iscsi_access: Literal["kernel", "qemu"] = Field(
        default="kernel",
        description="How QEMU here opens iSCSI volumes: kernel sessions or libiscsi.")
    libvirt_uri: str = Field(default="qemu:///system",
                             description="The libvirtd whose domains volumes are attached to.")
    libvirt_timeout: float = Field(default=30, gt=0,
                                   description="Seconds a libvirt call may take.")
    disk_bus: Literal["virtio", "scsi"] = Field(
        default="virtio",
        description="How volumes are plugged: virtio-blk (vdX), or disks on a virtio-scsi "
                    "controller (sdX; unplugged without the guest's help).")
    block_job_bandwidth: int = Field(
        default=0, ge=0,
        description="Bytes per second a live merge (block commit) may move on this host, "
                    "so it leaves the guests' I/O room; 0 for no limit.")
    live_copy_bandwidth: int = Field(
        default=0, ge=0,
        description="Bytes per second a live storage migration may copy (0: no limit), "
                    "so that a running VM keeps most of its storage's bandwidth.")
    s3_part_size: int = Field(
        default=32 << 20, ge=5 << 20,
        description="Bytes per S3 multipart part and ranged GET (S3's minimum part: 5 MiB).")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("debug_listen")
    @classmethod
    def _debug_listen(cls, v: str) -> str:
        host, _ = parse_listen(v)
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("debug_listen must be a loopback address")
        return v

    @field_validator("download_allow", "download_deny")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for network in v:
            try:
                ipaddress.ip_network(network)
            except ValueError:
                raise ValueError(f"{network!r} is not a network (CIDR)") from None
        return v

    @property
    def join_token_path(self) -> str:
        return self.join_token_file or os.path.join(self.state_dir, JOIN_TOKEN_FILE)

    @property
    def tls_dir(self) -> str:
        """This agent's key, certificate and the pinned CA, once enrolled."""
        return os.path.join(self.state_dir, TLS_DIR)
