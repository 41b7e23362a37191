"""Chunk manifests on real files in a temporary directory: what a registration (or an
upload) records matches digests computed here independently; a copy checked against the
manifest chunk by chunk yields the same bytes, and a corrupted chunk, a short or a long
source fail naming what differs and leave no file; an image without a manifest is
checked whole."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import botocore.exceptions
import pytest

from agent.commands.images import copy_image
from agent.files import FileStores
from agent.images import digests
from agent.images.digests import ManifestChecker, ManifestHasher, chunk_size_for
from agent.s3.store import S3Store
from shared.errors import ChecksumMismatch, InvalidInput
from shared.protocol.files import MAX_CHUNKS, ChunkManifest, CopyImagePayload
from shared.protocol.s3 import S3Endpoint
from tests.unit.test_snapshot_commands import no_progress, services

MIB = 1 << 20
GIB = 1 << 30


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def manifest_of(data: bytes, chunk_size: int) -> ChunkManifest:
    """Computed here, without the agent's code."""
    return ChunkManifest(chunk_size=chunk_size, chunks=[
        hashlib.sha256(data[i:i + chunk_size]).hexdigest()
        for i in range(0, len(data), chunk_size)])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """1 MiB chunks, so a file of a few MiB has several."""
    monkeypatch.setattr(digests, "BASE_CHUNK", MIB)
    return MIB


def test_the_chunk_size_doubles_so_a_manifest_stays_small() -> None:
    base = 64 * MIB
    assert chunk_size_for(None) == base
    assert chunk_size_for(0) == base
    assert chunk_size_for(GIB) == base
    assert chunk_size_for(base * MAX_CHUNKS) == base
    assert chunk_size_for(base * MAX_CHUNKS + 1) == 2 * base
    assert chunk_size_for(1 << 40) == GIB
    for size in (GIB, 100 * GIB, (1 << 40) + 1):
        assert -(-size // chunk_size_for(size)) <= MAX_CHUNKS


async def test_a_registration_records_the_chunk_digests(tmp_path: Path,
                                                        small_chunks: int) -> None:
    data = data_of(5 * MIB + 12345)
    (tmp_path / "src").write_bytes(data)
    facts = await copy_image(services(tmp_path), CopyImagePayload(
        src_path=str(tmp_path / "src"), dest_dir=str(tmp_path / "store"), file_name="img-1",
        expected_sha256=sha(data), expected_format="raw"), no_progress)
    assert facts.sha256 == sha(data) and facts.size == len(data)
    assert facts.manifest == manifest_of(data, small_chunks)
    assert facts.manifest is not None and len(facts.manifest.chunks) == 6


@pytest.mark.parametrize("size", [4 * MIB, 5 * MIB + 1, MIB - 1], ids=["whole", "tail", "one"])
async def test_a_fill_checked_by_chunks_yields_identical_bytes(tmp_path: Path,
                                                               size: int) -> None:
    data = data_of(size)
    manifest = manifest_of(data, MIB)
    (tmp_path / "img-1").write_bytes(data)
    facts = await copy_image(services(tmp_path), CopyImagePayload(
        src_path=str(tmp_path / "img-1"), dest_dir=str(tmp_path / "cache"), file_name="img-1",
        expected_sha256=sha(data), expected_format="raw", manifest=manifest), no_progress)
    assert (tmp_path / "cache" / "img-1").read_bytes() == data
    assert facts.sha256 == sha(data) and facts.size == size and facts.manifest == manifest
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["img-1"]


async def test_a_corrupted_chunk_fails_naming_it_and_leaves_no_file(tmp_path: Path) -> None:
    data = data_of(6 * MIB)
    corrupted = bytearray(data)
    corrupted[3 * MIB + 4096] ^= 0xFF
    (tmp_path / "img-1").write_bytes(bytes(corrupted))
    with pytest.raises(ChecksumMismatch, match=rf"chunk 3 \(from byte {3 * MIB}\)") as failed:
        await copy_image(services(tmp_path), CopyImagePayload(
            src_path=str(tmp_path / "img-1"), dest_dir=str(tmp_path / "cache"),
            file_name="img-1", expected_sha256=sha(data), expected_format="raw",
            manifest=manifest_of(data, MIB)), no_progress)
    assert failed.value.code == "checksum_mismatch"
    assert list((tmp_path / "cache").iterdir()) == [], "no temporary, no published file"


@pytest.mark.parametrize(("source", "error"), [
    (lambda d: d[:3 * MIB], r"received 3 chunks of 1048576 bytes, the manifest has 5"),
    (lambda d: d[:-1], r"chunk 4 .* the manifest says"),
    (lambda d: d + data_of(MIB, seed=3), r"more bytes than the manifest's 5 chunks"),
], ids=["short", "last-chunk-short", "long"])
async def test_a_source_the_manifest_does_not_cover_fails(
        tmp_path: Path, source: Callable[[bytes], bytes], error: str) -> None:
    data = data_of(4 * MIB + 100)
    (tmp_path / "img-1").write_bytes(source(data))
    with pytest.raises(ChecksumMismatch, match=error):
        await copy_image(services(tmp_path), CopyImagePayload(
            src_path=str(tmp_path / "img-1"), dest_dir=str(tmp_path / "cache"),
            file_name="img-1", expected_sha256=sha(data), expected_format="raw",
            manifest=manifest_of(data, MIB)), no_progress)
    assert list((tmp_path / "cache").iterdir()) == []


async def test_an_image_without_a_manifest_is_checked_whole(tmp_path: Path) -> None:
    data = data_of(3 * MIB)
    (tmp_path / "img-1").write_bytes(data)
    payload = CopyImagePayload(src_path=str(tmp_path / "img-1"),
                               dest_dir=str(tmp_path / "cache"), file_name="img-1",
                               expected_sha256="0" * 64, expected_format="raw")
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        await copy_image(services(tmp_path), payload, no_progress)
    assert list((tmp_path / "cache").iterdir()) == []
    facts = await copy_image(services(tmp_path), payload.model_copy(
        update={"expected_sha256": sha(data)}), no_progress)
    assert (tmp_path / "cache" / "img-1").read_bytes() == data
    assert facts.sha256 == sha(data) and facts.manifest == manifest_of(data, 64 * MIB)


async def test_a_manifest_needs_the_sha256_it_was_registered_with(tmp_path: Path) -> None:
    (tmp_path / "img-1").write_bytes(b"x")
    with pytest.raises(InvalidInput):
        await copy_image(services(tmp_path), CopyImagePayload(
            src_path=str(tmp_path / "img-1"), dest_dir=str(tmp_path / "cache"),
            file_name="img-1", manifest=manifest_of(b"x", MIB)), no_progress)


async def test_chunks_across_uneven_reads(small_chunks: int) -> None:
    """Reads of any length, crossing chunk ends, hash and check the same chunks."""
    data = data_of(7 * MIB + 777)
    hasher = ManifestHasher(len(data))
    checker = ManifestChecker(sha(data), manifest_of(data, MIB))
    rng = random.Random(2)
    offset = 0
    while offset < len(data):
        step = rng.choice([1, 4096, 700 * 1024, 3 * MIB])
        await hasher.update(data[offset:offset + step])
        await checker.update(data[offset:offset + step])
        offset += step
    made = await hasher.result()
    assert made.sha256 == sha(data) and made.manifest == manifest_of(data, MIB)
    assert await checker.result() == made
    await checker.close()


async def test_an_unannounced_size_past_the_bound_gets_no_manifest(
        small_chunks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "MAX_CHUNKS", 4)
    data = data_of(5 * MIB)
    hasher = ManifestHasher(None)
    for i in range(0, len(data), MIB // 2):
        await hasher.update(data[i:i + MIB // 2])
    made = await hasher.result()
    assert made.sha256 == sha(data) and made.manifest is None


async def test_an_empty_file_has_no_chunks() -> None:
    hasher = ManifestHasher(0)
    made = await hasher.result()
    assert made.manifest == ChunkManifest(chunk_size=64 * MIB, chunks=[])
    assert made.manifest is not None
    assert (await ManifestChecker(sha(b""), made.manifest).result()).sha256 == sha(b"")


class MemoryS3:
    """Just enough of an S3 client for one upload: objects and multipart parts in
    memory."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._parts: dict[int, bytes] = {}
        self._meta: dict[str, str] = {}

    def head_object(self, Bucket: str, Key: str) -> dict[str, object]:
        if Key not in self.objects:
            raise botocore.exceptions.ClientError({"Error": {"Code": "404"}}, "HeadObject")
        body, meta = self.objects[Key]
        return {"ContentLength": len(body), "Metadata": meta}

    def create_multipart_upload(self, Bucket: str, Key: str,
                                Metadata: dict[str, str]) -> dict[str, str]:
        self._meta = Metadata
        return {"UploadId": "u-1"}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                    Body: bytes) -> dict[str, str]:
        self._parts[PartNumber] = Body
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, Bucket: str, Key: str, UploadId: str,
                                  MultipartUpload: dict[str, list[dict[str, object]]]) -> None:
        self.objects[Key] = (b"".join(self._parts[n] for n in sorted(self._parts)), self._meta)


async def test_an_s3_upload_makes_the_manifest_of_what_it_sent(
        tmp_path: Path, small_chunks: int) -> None:
    data = data_of(3 * MIB + 5)
    (tmp_path / "vol").write_bytes(data)
    client = MemoryS3()
    store = S3Store(S3Endpoint(endpoint_url="http://s3.invalid", bucket="bkt",
                               access_key="a", secret_key="b"),
                    part_size=MIB, client_factory=lambda e: client)
    files = FileStores(nfs_timeout=5)
    try:
        size, digest = await store.upload(files, str(tmp_path / "vol"), "strata/images/img-2")
    finally:
        files.close()
    assert size == len(data) and digest.sha256 == sha(data)
    assert digest.manifest == manifest_of(data, MIB)
    assert client.objects["strata/images/img-2"] == (data, {"sha256": sha(data)})
