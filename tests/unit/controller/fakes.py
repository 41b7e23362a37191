"""A recording fake agent, a job context around it, and the stores and objects the
controller's plugins are run against in unit tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agentchannel import AgentTarget
from controller.agentclient import AgentClient, NoticeCallback, ProgressCallback
from controller.db.models import (
    BackupStorage,
    Host,
    HostState,
    Image,
    ImageCache,
    ImageStoreRef,
    Job,
    JobState,
    ObjectState,
    PrimaryStorage,
    Volume,
)
from controller.jobs.engine import JobContext, JobEngine
from controller.plugins.interfaces.backup import BackupStorageProvider
from controller.plugins.interfaces.primary import PrimaryStorageProvider
from controller.plugins.interfaces.stores import Backup, Primary
from controller.secrets import SecretBox
from shared.protocol.command import Command
from shared.protocol.files import (
    DeleteFileResult,
    ImageFacts,
    PrepareStorageResult,
    UploadResult,
)
from shared.protocol.host import HostInfoResult
from shared.protocol.iscsi import ExportLunResult, IscsiTarget, LunAccessResult
from shared.protocol.nfs import NfsMountResult
from shared.protocol.s3 import S3Endpoint
from shared.protocol.sftp import SftpEndpoint
from shared.protocol.types import EmptyPayload, FsCapacity, Model
from shared.protocol.volumes import SnapshotDeleted, SnapshotFacts, VolumeFacts, VolumesCompared

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)

CAPACITY = FsCapacity(total=100 << 30, available=60 << 30)
SHA = "5" * 64
SECRETS = SecretBox(Fernet.generate_key())

# Settings of the stores under test, and the endpoints agents must get from them.
NFS_SERVER = {"server": "nfs.example", "export": "/exports/strata"}
SFTP_CONFIG = {"host": "sftp.example", "port": 2222, "username": "strata",
               "path": "/srv/sftp", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
               "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nclear\n"}
S3_CONFIG = {"endpoint_url": "http://s3.example:9000", "bucket": "images",
             "access_key": "AKIA0000", "secret_key": "x" * 256}
SFTP_ENDPOINT = SftpEndpoint(host="sftp.example", port=2222, username="strata",
                             host_key=SFTP_CONFIG["host_key"],
                             private_key=SFTP_CONFIG["private_key"])
S3_ENDPOINT = S3Endpoint(endpoint_url="http://s3.example:9000", bucket="images",
                         access_key="AKIA0000", secret_key="x" * 256)


@dataclass(frozen=True)
class Call:
    """One command as the agent at `address` received it."""

    address: str
    command: Command[Any, Any]
    task_id: str
    payload: Model


def _facts(path: str) -> ImageFacts:
    return ImageFacts(path=path, size=12 << 20, sha256=SHA, format="qcow2",
                      virtual_size=1 << 30, capacity=CAPACITY)


# What the fake agent answers when a test does not say otherwise: plausible facts that
# echo the payload where the controller reads them back.
ANSWERS: dict[str, Callable[[Any], Model]] = {
    "host_info": lambda p: HostInfoResult(hostname="kvm-1", agent_id="agent-kvm-1",
                                          agent_version="0.1.0", qemu_img_version="9.0.0"),
    "prepare_storage": lambda p: PrepareStorageResult(path=p.path, capacity=CAPACITY),
    "sftp_prepare": lambda p: PrepareStorageResult(path=p.path, capacity=CAPACITY),
    "s3_prepare": lambda p: PrepareStorageResult(path=p.endpoint.bucket, capacity=CAPACITY),
    "nfs_mount": lambda p: NfsMountResult(mount_point=p.mount_point, users=[p.user]),
    "nfs_unmount": lambda p: NfsMountResult(mount_point=p.mount_point, users=[]),
    "create_volume": lambda p: VolumeFacts(path=f"{p.dest_dir}/{p.file_name}",
                                           virtual_size=p.size, capacity=CAPACITY),
    "delete_file": lambda p: DeleteFileResult(existed=True, capacity=CAPACITY),
    "copy_volume": lambda p: VolumeFacts(path=f"{p.dest_dir}/{p.file_name}",
                                         virtual_size=1 << 30, capacity=CAPACITY),
    "compare_volumes": lambda p: VolumesCompared(same=True),
    "take_snapshot": lambda p: SnapshotFacts(
        path=f"{p.dir}/{p.overlay}", snapshot_path=f"{p.dir}/{p.active}", actual_size=4 << 20,
        virtual_size=1 << 30, capacity=CAPACITY),
    "revert_snapshot": lambda p: VolumeFacts(path=f"{p.dir}/{p.overlay}",
                                             virtual_size=1 << 30, capacity=CAPACITY),
    "delete_snapshot": lambda p: SnapshotDeleted(existed=True, capacity=CAPACITY),
    "clone_layer": lambda p: VolumeFacts(path=f"{p.dir}/{p.file_name}",
                                         virtual_size=1 << 30, capacity=CAPACITY),
    "export_lun": lambda p: ExportLunResult(
        path=f"{p.dir}/{p.file_name}", capacity=CAPACITY,
        target=IscsiTarget(portal="10.0.0.9:3260", target=p.target, lun=1)),
    "unexport_lun": lambda p: DeleteFileResult(existed=True, capacity=CAPACITY),
    "grant_lun": lambda p: LunAccessResult(target=p.target, initiators=[p.initiator]),
    "revoke_lun": lambda p: LunAccessResult(target=p.target, initiators=[]),
    "download_image": lambda p: _facts(f"{p.dest_dir}/{p.file_name}"),
    "copy_image": lambda p: _facts(f"{p.dest_dir}/{p.file_name}"),
    "sftp_register": lambda p: _facts(f"{p.remote_dir}/{p.file_name}"),
    "sftp_download": lambda p: _facts(f"{p.dest_dir}/{p.file_name}"),
    "sftp_upload": lambda p: UploadResult(path=f"{p.remote_dir}/{p.file_name}",
                                          size=12 << 20, sha256=SHA, capacity=CAPACITY),
    "sftp_delete": lambda p: DeleteFileResult(existed=True, capacity=CAPACITY),
    "s3_register": lambda p: _facts(p.key),
    "s3_download": lambda p: _facts(f"{p.dest_dir}/{p.file_name}"),
    "s3_upload": lambda p: UploadResult(path=p.key, size=12 << 20, sha256=SHA,
                                        capacity=CAPACITY),
    "s3_delete": lambda p: DeleteFileResult(existed=True, capacity=CAPACITY),
    "disconnect_volume": lambda p: EmptyPayload(),
}


class RecordingAgent(AgentClient):
    """Stands in for the agents: records every command it is sent and answers with
    `answers[name](payload)` (the defaults above unless a test scripts its own)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.answers = dict(ANSWERS)

    async def call(
        self, target: AgentTarget, command: Command[P, R], task_id: str, payload: P, *,
        timeout: float | None = None, progress: ProgressCallback | None = None,
        notice: NoticeCallback | None = None,
    ) -> R:
        self.calls.append(Call(target.address, command, task_id, payload))
        result = self.answers[command.name](payload)
        assert isinstance(result, command.result), (command.name, result)
        return result


def job_context(agent: RecordingAgent, db: async_sessionmaker[AsyncSession]) -> JobContext:
    """The context of a running job `job-1` whose agent calls go to `agent`. The job has
    no row: progress is never written (`_last_write` is in the future)."""
    job = Job(id="job-1", kind="test", params={}, state=JobState.RUNNING, progress=0.0)
    return JobContext(job=job, engine=JobEngine(db, agent, SECRETS), db=db, agents=agent,
                      secrets=SECRETS, _last_write=math.inf)


def host(name: str = "kvm-1", **values: Any) -> Host:
    return Host(**{"id": f"host-{name}", "name": name, "address": f"https://{name}:8641",
                   "hypervisor": "kvm", "state": HostState.CONNECTED,
                   "initiator_iqn": f"iqn.2026-01.org.example:{name}", **values})


def primary(provider: PrimaryStorageProvider[Any], config: dict[str, Any],
            store_id: str = "ps-1") -> Primary[Any]:
    """A primary storage of `provider`'s type, stored and bound as the services do."""
    stored = provider.config_model.model_validate(config).sealed(SECRETS)
    return provider.bind(PrimaryStorage(id=store_id, name=f"{provider.type}-storage",
                                        type=provider.type, hypervisor="kvm", config=stored))


def backup(provider: BackupStorageProvider[Any], config: dict[str, Any],
           store_id: str = "bs-1") -> Backup[Any]:
    stored = provider.config_model.model_validate(config).sealed(SECRETS)
    return provider.bind(BackupStorage(id=store_id, name=f"{provider.type}-store",
                                       type=provider.type, config=stored))


def image(**values: Any) -> Image:
    return Image(**{"id": "img-1", "name": "debian", "url": "http://images.example/d.qcow2",
                    "declared_format": "qcow2", "declared_sha256": SHA, "format": "qcow2",
                    "sha256": SHA, "size": 12 << 20, "virtual_size": 1 << 30,
                    "state": ObjectState.READY, **values})


def volume(**values: Any) -> Volume:
    return Volume(**{"id": "vol-1", "name": "root", "primary_storage_id": "ps-1",
                     "size": 1 << 30, "format": "qcow2", "state": ObjectState.READY,
                     **values})


def cache(path: str) -> ImageCache:
    return ImageCache(id="cache-1", image_id="img-1", primary_storage_id="ps-1", path=path,
                      size=12 << 20, attempt=1, state=ObjectState.CREATING)


def store_ref(path: str) -> ImageStoreRef:
    return ImageStoreRef(id="ref-1", image_id="img-1", backup_storage_id="bs-1", path=path,
                         state=ObjectState.READY)
