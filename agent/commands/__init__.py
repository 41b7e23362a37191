"""Command handlers, one module per concern, bound to the protocol's command table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent.commands import host, images, iscsi, nfs, s3, sftp, storage, volumes
from agent.services import AgentServices
from shared.protocol import COMMAND_MODELS, Command, Model

ProgressCallback = Callable[[float], None]
Handler = Callable[[AgentServices, Any, ProgressCallback], Awaitable[Model]]

HANDLERS: dict[str, Handler] = {
    Command.HOST_INFO: host.host_info,
    Command.SLEEP: host.sleep,
    Command.PREPARE_STORAGE: storage.prepare_storage,
    Command.DOWNLOAD_IMAGE: images.download_image,
    Command.COPY_IMAGE: images.copy_image,
    Command.CREATE_VOLUME: volumes.create_volume,
    Command.DELETE_FILE: volumes.delete_file,
    Command.EXPORT_LUN: iscsi.export_lun,
    Command.UNEXPORT_LUN: iscsi.unexport_lun,
    Command.GRANT_LUN: iscsi.grant_lun,
    Command.REVOKE_LUN: iscsi.revoke_lun,
    Command.CONNECT_VOLUME: iscsi.connect_volume,
    Command.DISCONNECT_VOLUME: iscsi.disconnect_volume,
    Command.SFTP_PREPARE: sftp.sftp_prepare,
    Command.SFTP_REGISTER: sftp.sftp_register,
    Command.SFTP_DOWNLOAD: sftp.sftp_download,
    Command.SFTP_UPLOAD: sftp.sftp_upload,
    Command.SFTP_DELETE: sftp.sftp_delete,
    Command.S3_PREPARE: s3.s3_prepare,
    Command.S3_REGISTER: s3.s3_register,
    Command.S3_DOWNLOAD: s3.s3_download,
    Command.S3_UPLOAD: s3.s3_upload,
    Command.S3_DELETE: s3.s3_delete,
    Command.NFS_MOUNT: nfs.nfs_mount,
    Command.NFS_UNMOUNT: nfs.nfs_unmount,
}

assert set(HANDLERS) == set(COMMAND_MODELS), "every protocol command needs a handler"
