"""SFTP backup storage commands: prepare the store, register images into it, copy images
out of it into a cache, upload files to it, delete from it. sha256 is checked end to end."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from agent.commands.images import flattened, staged_download
from agent.commands.registry import handles
from agent.images.writer import VerifiedImageWriter
from agent.services import AgentServices
from agent.sftp.keyfiles import key_dir
from agent.tools import ssh
from shared.names import TEMP_PREFIX
from shared.protocol.files import DeleteFileResult, ImageFacts, PrepareStorageResult, UploadResult
from shared.protocol.objects import ObjectList, StoreObject
from shared.protocol.sftp import (
    SFTP_DELETE,
    SFTP_DOWNLOAD,
    SFTP_LIST,
    SFTP_PREPARE,
    SFTP_REGISTER,
    SFTP_UPLOAD,
    SftpDeletePayload,
    SftpDownloadPayload,
    SftpEndpoint,
    SftpListPayload,
    SftpPreparePayload,
    SftpRegisterPayload,
    SftpUploadPayload,
)

if TYPE_CHECKING:
    from agent.sftp.session import SftpSession

Progress = Callable[[float], None]


def connect(endpoint: SftpEndpoint) -> AbstractAsyncContextManager[SftpSession]:
    """The SFTP session; asyncssh (a third of a second to import) is loaded on first use."""
    from agent.sftp import session

    return session.connect(endpoint)


def span(progress: Progress, lo: float, hi: float) -> Progress:
    """Maps a step's 0-100 onto lo-hi of the task's progress."""
    return lambda pct: progress(lo + (hi - lo) * pct / 100.0)


@handles(SFTP_PREPARE)
async def sftp_prepare(svc: AgentServices, payload: SftpPreparePayload,
                       progress: Progress) -> PrepareStorageResult:
    """Creates the directories and proves the account can write there."""
    async with connect(payload.endpoint) as session:
        for sub in ["", *payload.subdirs]:
            await session.makedirs(posixpath.join(payload.path, sub) if sub else payload.path)
        probe = posixpath.join(payload.path, f"{TEMP_PREFIX}write-probe")
        async with await session.sftp.open(probe, "wb") as f:
            await f.write(b"strata")
        await session.remove(probe)
        return PrepareStorageResult(path=payload.path,
                                    capacity=await session.capacity(payload.path))


@handles(SFTP_REGISTER)
async def sftp_register(svc: AgentServices, payload: SftpRegisterPayload,
                        progress: Progress) -> ImageFacts:
    async with staged_download(svc, payload.url, payload.file_name, payload.expected_sha256,
                               payload.expected_format, span(progress, 0, 50)) as (local, facts):
        async with connect(payload.endpoint) as session:
            remote, _, _ = await session.upload(svc.files, local,
                                                payload.remote_dir, payload.file_name,
                                                span(progress, 50, 100))
            capacity = await session.capacity(payload.remote_dir)
    return facts.model_copy(update={"path": remote, "capacity": capacity})


@handles(SFTP_DOWNLOAD)
async def sftp_download(svc: AgentServices, payload: SftpDownloadPayload,
                        progress: Progress) -> ImageFacts:
    """asyncssh checks the server and the file; OpenSSH's client carries the bytes."""
    async with connect(payload.endpoint) as session:
        writer = VerifiedImageWriter(
            svc.inspector, svc.files, payload.dest_dir,
            payload.file_name,
            expected_sha256=payload.expected_sha256, expected_format=payload.expected_format,
            expected_size=await session.size(payload.remote_path), progress=progress,
            manifest=payload.manifest,
        )
        async with ssh.read_file(svc.executor, payload.endpoint, payload.remote_path,
                                 key_dir(svc.config.state_dir)) as chunks:
            return await writer.write_all(chunks)


@handles(SFTP_UPLOAD)
async def sftp_upload(svc: AgentServices, payload: SftpUploadPayload,
                      progress: Progress) -> UploadResult:
    async with (flattened(svc, payload.local_path, payload.flatten, progress,
                          payload.src_format) as (local, rest),
                connect(payload.endpoint) as session):
        await session.makedirs(payload.remote_dir)
        path, size, digest = await session.upload(
            svc.files, local, payload.remote_dir, payload.file_name, rest)
        return UploadResult(path=path, size=size, sha256=digest.sha256,
                            manifest=digest.manifest,
                            capacity=await session.capacity(payload.remote_dir))


@handles(SFTP_DELETE)
async def sftp_delete(svc: AgentServices, payload: SftpDeletePayload,
                      progress: Progress) -> DeleteFileResult:
    async with connect(payload.endpoint) as session:
        existed = await session.remove(posixpath.join(payload.remote_dir, payload.file_name))
        return DeleteFileResult(existed=existed,
                                capacity=await session.capacity(payload.remote_dir))


@handles(SFTP_LIST)
async def sftp_list(svc: AgentServices, payload: SftpListPayload,
                    progress: Progress) -> ObjectList:
    """Through the session's SFTP channel: names and lengths (SFTP tells no allocated
    blocks, and a virtual size would cost a read per file, so it is None)."""
    async with connect(payload.endpoint) as session:
        objects = []
        for directory in payload.dirs:
            path = (posixpath.join(payload.root, directory.subdir) if directory.subdir
                    else payload.root)
            for name, size in sorted(await session.files(path)):
                rel = posixpath.join(directory.subdir, name) if directory.subdir else name
                kind = "temporary" if name.startswith(TEMP_PREFIX) else directory.kind
                objects.append(StoreObject(path=rel, kind=kind, size=size))
        return ObjectList(objects=objects, capacity=await session.capacity(payload.root))
