"""Data store drivers: grants of primary storage volumes to hosts, and images registered
into (and deleted from) each backup storage type."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import DIR
from controller.plugins.interfaces.primary import PrimaryStorageProvider
from controller.plugins.interfaces.stores import Primary
from controller.plugins.iscsi.provider import ISCSI, IscsiConfig
from controller.plugins.local.provider import LOCAL
from controller.plugins.nfs.provider import NFS
from controller.plugins.s3.provider import S3
from controller.plugins.sftp.provider import SFTP
from shared.errors import Conflict, OperationFailed, Unsupported
from shared.protocol.files import (
    DELETE_FILE,
    DOWNLOAD_IMAGE,
    DeleteFilePayload,
    DownloadImagePayload,
)
from shared.protocol.iscsi import GRANT_LUN, REVOKE_LUN, LunAccessPayload, LunAccessResult
from shared.protocol.s3 import (
    S3_DELETE,
    S3_REGISTER,
    S3DeletePayload,
    S3Endpoint,
    S3RegisterPayload,
)
from shared.protocol.sftp import (
    SFTP_DELETE,
    SFTP_REGISTER,
    SftpDeletePayload,
    SftpRegisterPayload,
)
from tests.unit.controller.fakes import (
    S3_CONFIG,
    SFTP_CONFIG,
    SFTP_ENDPOINT,
    SHA,
    Call,
    RecordingAgent,
    backup,
    host,
    image,
    primary,
    store_ref,
    volume,
)

HOST = host()
SERVER = host("storage-1")
EXPORT = {"portal": "10.0.0.9:3260", "target": "iqn.2026-11.org.strata:vol-1", "lun": 1,
          "chap": {"user": "strata-vol-1", "password": "sealed"}}
ACCESS = LunAccessPayload(target="iqn.2026-11.org.strata:vol-1", initiator=HOST.initiator_iqn)


@pytest.fixture
async def iscsi_server(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        session.add(host("storage-1"))


def iscsi_store() -> Primary[IscsiConfig]:
    return primary(ISCSI, {"server_host_id": SERVER.id, "path": "/srv/iscsi",
                           "portal": "10.0.0.9:3260"})


@pytest.mark.usefixtures("iscsi_server")
async def test_iscsi_grant_and_revoke_the_hosts_initiator(ctx: JobContext,
                                                          agent: RecordingAgent) -> None:
    store, vol = iscsi_store(), volume(export=EXPORT)
    ISCSI.driver.check_grant(store, HOST)
    uri = await ISCSI.driver.grant_access(ctx, store, vol, HOST)
    await ISCSI.driver.revoke_access(ctx, store, vol, HOST)
    assert uri == "iscsi://10.0.0.9:3260/iqn.2026-11.org.strata:vol-1/1"
    assert agent.calls == [Call(SERVER.address, GRANT_LUN, "job-1.grant-host-kvm-1", ACCESS),
                           Call(SERVER.address, REVOKE_LUN, "job-1.revoke-host-kvm-1", ACCESS)]


@pytest.mark.usefixtures("iscsi_server")
async def test_iscsi_grant_not_taken_fails(ctx: JobContext, agent: RecordingAgent) -> None:
    agent.answers["grant_lun"] = lambda p: LunAccessResult(target=p.target, initiators=[])
    with pytest.raises(OperationFailed):
        await ISCSI.driver.grant_access(ctx, iscsi_store(), volume(export=EXPORT), HOST)


async def test_iscsi_refuses_grants_it_cannot_make(ctx: JobContext,
                                                  agent: RecordingAgent) -> None:
    store = iscsi_store()
    with pytest.raises(Conflict) as no_iqn:
        ISCSI.driver.check_grant(store, host(initiator_iqn=None))
    assert no_iqn.value.code == "no_initiator"
    with pytest.raises(Conflict) as unexported:
        await ISCSI.driver.grant_access(ctx, store, volume(), HOST)
    assert unexported.value.code == "not_exported"
    await ISCSI.driver.revoke_access(ctx, store, volume(), HOST)
    assert agent.calls == [], "an unexported volume has no grants to revoke"


@pytest.mark.parametrize(("provider", "config"), [
    (LOCAL, {"path": "/srv/local"}), (NFS, {"server": "nfs.example", "export": "/x"})],
    ids=["local", "nfs"])
async def test_file_storages_grant_nothing(provider: PrimaryStorageProvider[Any],
                                           config: dict[str, Any], ctx: JobContext,
                                           agent: RecordingAgent) -> None:
    store, driver = primary(provider, config), provider.driver
    with pytest.raises(Unsupported) as refused:
        driver.check_grant(store, HOST)
    assert refused.value.code == "access_not_supported"
    with pytest.raises(Unsupported):
        await driver.grant_access(ctx, store, volume(), HOST)
    with pytest.raises(Unsupported):
        await driver.revoke_access(ctx, store, volume(), HOST)
    assert agent.calls == []


async def test_dir_register_and_delete(ctx: JobContext, agent: RecordingAgent) -> None:
    store = backup(DIR, {"path": "/srv/images"})
    facts = await DIR.driver.register(ctx, store, image(), HOST)
    await DIR.driver.delete(ctx, store, store_ref(facts.path), HOST)
    assert facts.path == "/srv/images/images/img-1"
    assert agent.calls == [
        Call(HOST.address, DOWNLOAD_IMAGE, "job-1.download", DownloadImagePayload(
            url="http://images.example/d.qcow2", dest_dir="/srv/images/images",
            file_name="img-1", expected_sha256=SHA, expected_format="qcow2")),
        Call(HOST.address, DELETE_FILE, "job-1.delete-ref-1",
             DeleteFilePayload(dir="/srv/images/images", file_name="img-1")),
    ]


async def test_sftp_register_and_delete(ctx: JobContext, agent: RecordingAgent) -> None:
    store = backup(SFTP, SFTP_CONFIG)
    await SFTP.driver.register(ctx, store, image(declared_format=None, declared_sha256=None),
                               HOST)
    await SFTP.driver.delete(ctx, store, store_ref("/srv/sftp/images/img-1"), HOST)
    endpoint = SFTP_ENDPOINT
    assert agent.calls == [
        Call(HOST.address, SFTP_REGISTER, "job-1.download", SftpRegisterPayload(
            endpoint=endpoint, url="http://images.example/d.qcow2",
            remote_dir="/srv/sftp/images", file_name="img-1")),
        Call(HOST.address, SFTP_DELETE, "job-1.delete-ref-1", SftpDeletePayload(
            endpoint=endpoint, remote_dir="/srv/sftp/images", file_name="img-1")),
    ]


async def test_s3_register_and_delete(ctx: JobContext, agent: RecordingAgent) -> None:
    store = backup(S3, {**S3_CONFIG, "prefix": "cloud/a/", "region": "eu-west-1"})
    await S3.driver.register(ctx, store, image(declared_format="raw"), HOST)
    await S3.driver.delete(ctx, store, store_ref("cloud/a/images/img-1"), HOST)
    endpoint = S3Endpoint(endpoint_url="http://s3.example:9000", bucket="images",
                          region="eu-west-1", access_key="AKIA0000", secret_key="x" * 256)
    assert agent.calls == [
        Call(HOST.address, S3_REGISTER, "job-1.download", S3RegisterPayload(
            endpoint=endpoint, url="http://images.example/d.qcow2", key="cloud/a/images/img-1",
            expected_sha256=SHA, expected_format="raw")),
        Call(HOST.address, S3_DELETE, "job-1.delete-ref-1",
             S3DeletePayload(endpoint=endpoint, key="cloud/a/images/img-1")),
    ]
