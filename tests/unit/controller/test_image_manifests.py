"""Chunk manifests through the controller, against the recording fake agent and an
in-memory database: the manifest an agent made as an image was registered (downloaded,
or copied up from a volume) is kept on the image row, out of the job's result, and sent
with the cache fill; an image without one is filled as before."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import Image, Job
from controller.motion.service import chunk_manifest
from controller.services.base import ServiceDeps
from controller.services.commands import CreateVolume, RegisterImage
from controller.services.images import ImageService
from controller.services.volumes import VolumeService
from shared.protocol.files import ChunkManifest, CopyImagePayload, ImageFacts
from tests.unit.controller.fakes import CAPACITY, SHA, RecordingAgent
from tests.unit.controller.test_backup_service import seed_store
from tests.unit.controller.test_snapshot_service import deps, seed, succeeded

MANIFEST = ChunkManifest(chunk_size=64 << 20, chunks=["a" * 64, "b" * 64])


def facts_with(manifest: ChunkManifest | None) -> Any:
    def answer(payload: Any) -> ImageFacts:
        return ImageFacts(path=f"{payload.dest_dir}/{payload.file_name}", size=100 << 20,
                          sha256=SHA, format="qcow2", virtual_size=1 << 30,
                          capacity=CAPACITY, manifest=manifest)
    return answer


async def registered(d: ServiceDeps, **source: Any) -> Image:
    image, job = await ImageService(d).register(RegisterImage(
        name="debian", backup_storage_id="bs-1", **source))
    await succeeded(d.jobs, job.id)
    async with d.db() as session:
        done = await session.get(Job, job.id)
        found = await session.get(Image, image.id)
        assert found is not None
        with pytest.raises(InvalidRequestError, match="raiseload"):
            _ = found.chunk_sha256s  # never loaded with the row
    assert done is not None and set(done.result or {}) == {
        "sha256", "size", "format", "virtual_size"}, "no digests in the job's result"
    return found


async def fill_payload(d: ServiceDeps, agent: RecordingAgent, image_id: str) -> Any:
    agent.calls.clear()
    _, job = await VolumeService(d).create(CreateVolume(name="root", primary_storage_id="ps-1",
                                                        image_id=image_id))
    await succeeded(d.jobs, job.id)
    fills = [c.payload for c in agent.calls if c.command.name == "copy_image"]
    assert len(fills) == 1
    return fills[0]


@pytest.fixture
async def d(db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> ServiceDeps:
    await seed(db)
    await seed_store(db)
    return deps(db, agent)


async def test_the_manifest_made_at_registration_goes_with_the_fill(
        d: ServiceDeps, agent: RecordingAgent) -> None:
    agent.answers["download_image"] = facts_with(MANIFEST)
    image = await registered(d, url="http://images.example/d.qcow2", format="qcow2",
                             sha256=SHA)
    assert image.chunk_size == MANIFEST.chunk_size
    async with d.db() as session:
        assert await chunk_manifest(session, image.id) == MANIFEST

    payload = await fill_payload(d, agent, image.id)
    assert payload == CopyImagePayload(
        src_path=f"/srv/images/images/{image.id}", dest_dir="/srv/local/imagecache",
        file_name=image.id, expected_sha256=SHA, expected_format="qcow2", manifest=MANIFEST)


async def test_an_image_without_a_manifest_is_filled_checked_whole(
        d: ServiceDeps, agent: RecordingAgent) -> None:
    agent.answers["download_image"] = facts_with(None)
    image = await registered(d, url="http://images.example/d.qcow2", format="qcow2")
    assert image.chunk_size is None
    async with d.db() as session:
        assert await chunk_manifest(session, image.id) is None
    payload = await fill_payload(d, agent, image.id)
    assert payload.manifest is None and payload.expected_sha256 == SHA


async def test_an_image_made_of_a_volume_keeps_the_upload_manifest(
        d: ServiceDeps, agent: RecordingAgent) -> None:
    agent.answers["copy_image"] = facts_with(MANIFEST)
    image = await registered(d, volume_id="vol-1")
    async with d.db() as session:
        assert await chunk_manifest(session, image.id) == MANIFEST
