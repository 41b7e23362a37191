"""The cells of the matrix: for one (primary type, backup type, hypervisor), the mediator
that moves bytes between the two stores: images down into the primary storage's cache,
volumes up into the backup storage."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from controller.db.models import Host, Image, ImageCache, ImageStoreRef, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backup import IMAGES, BackupStorageProvider, Folder
from controller.plugins.interfaces.primary import PrimaryStorageProvider
from controller.plugins.interfaces.stores import Backup, Primary, StoreConfig
from shared.errors import Unsupported
from shared.protocol.files import ChunkManifest, ImageFacts
from shared.protocol.types import ImageFormat

PC = TypeVar("PC", bound=StoreConfig)
BC = TypeVar("BC", bound=StoreConfig)


@dataclass(frozen=True)
class DownloadRequest(Generic[PC, BC]):
    """Bring `image` from `backup` (where `ref` is its copy) into the image cache `cache`
    of `primary`, through `host`, as the agent task `task_id` (shared by every job
    waiting for that cache). `dest`, a (directory, file name) of the primary storage,
    lands the copy there instead (a volume staged through the backup storage).
    `manifest`: the image's chunk digests, which the copy is checked against when given
    (else its whole sha256 is)."""

    image: Image
    ref: ImageStoreRef
    backup: Backup[BC]
    primary: Primary[PC]
    cache: ImageCache
    host: Host
    task_id: str
    dest: tuple[str, str] | None = None
    manifest: ChunkManifest | None = None


@dataclass(frozen=True)
class UploadRequest(Generic[PC, BC]):
    """Copy `volume` from `primary` into `backup` as `file_name` in `folder`, through
    `host` (the host that reaches the volume), as the agent task `task_id`. `source`: the
    layer to copy, if not the volume's active layer (a snapshot's frozen file);
    `flatten`: it sits on a chain (or is raw, `source_format`), copied as one qcow2 file
    of all it reads."""

    volume: Volume
    primary: Primary[PC]
    backup: Backup[BC]
    host: Host
    file_name: str
    task_id: str
    source: str | None = None
    flatten: bool = False
    folder: Folder = IMAGES
    source_format: ImageFormat = "qcow2"


@dataclass(frozen=True)
class RestoreRequest(Generic[PC, BC]):
    """Bring the stored file `source` (a path or an object key) of `backup` into the
    directory `dest_dir` of `primary` as `file_name`, verified against `sha256` and
    `format`, through `host`, as the agent task `task_id`: the download direction, into
    a volume rather than the image cache."""

    backup: Backup[BC]
    primary: Primary[PC]
    source: str
    sha256: str
    format: ImageFormat
    dest_dir: str
    file_name: str
    host: Host
    task_id: str


@dataclass(frozen=True)
class Uploaded:
    """The stored copy, and the chunk manifest made as it was sent (if the agent made
    one)."""

    path: str
    size: int
    sha256: str
    manifest: ChunkManifest | None = None


class PrimaryToBackupStorageMediator(abc.ABC, Generic[PC, BC]):
    """The bytes of one cell: the agent commands that carry them, both ways."""

    @abc.abstractmethod
    async def download(self, ctx: JobContext, request: DownloadRequest[PC, BC]) -> ImageFacts:
        """Copies the image into the primary storage's image cache, verified."""

    @abc.abstractmethod
    async def upload(self, ctx: JobContext, request: UploadRequest[PC, BC]) -> Uploaded:
        """Copies the volume into the backup storage, verified there."""

    async def restore(self, ctx: JobContext, request: RestoreRequest[PC, BC]) -> ImageFacts:
        """Copies a stored file (a snapshot's backup) into a volume directory, verified."""
        raise Unsupported(f"backup storage {request.backup.name} can't restore into "
                          f"primary storage {request.primary.name}")


@dataclass(frozen=True)
class Cell:
    """One cell: its two stores' types, its hypervisor, its mediator, and a name for each
    direction that reads the way the data go."""

    primary: PrimaryStorageProvider[Any]
    backup: BackupStorageProvider[Any]
    hypervisor: str
    mediator: PrimaryToBackupStorageMediator[Any, Any]
    download: str
    upload: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.primary.type, self.backup.type, self.hypervisor)
