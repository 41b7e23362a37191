"""S3 backup storage from the agent's side (boto3, run in threads).

Downloads are ranged GETs, each part retried on its own, so a dropped connection costs
one part, not the object. Uploads are one PUT for small objects and multipart beyond the
part size (the agent's `s3_part_size`), aborted on failure; an object appears only whole,
and only if absent (`If-None-Match: *`). The object's sha256 travels as metadata and is
checked on reading. S3 reports no capacity: prepare and deletes report zeros, meaning
"not measured".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from agent.files import FileReader, FileStores
from agent.images.digests import Digest, ManifestHasher
from shared.errors import Conflict, NotFound, OperationFailed, StrataError
from shared.protocol.s3 import S3Endpoint

RETRIES = 4
SHA_KEY = "sha256"

ClientFactory = Callable[[S3Endpoint], Any]


def make_client(endpoint: S3Endpoint) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint.endpoint_url, region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key, aws_secret_access_key=endpoint.secret_key,
        config=botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"},
                                      connect_timeout=20, read_timeout=120,
                                      s3={"addressing_style": "path"}))


def _error(exc: Exception, what: str) -> StrataError:
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
            return NotFound(f"{what}: not found ({code})")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return OperationFailed(f"{what}: the S3 credentials were refused ({code})",
                                   code="s3_auth_failed")
        if code in ("PreconditionFailed", "412"):
            return Conflict(f"{what}: the object already exists; it is never overwritten")
        return OperationFailed(f"{what}: {code or exc}", code="s3_failed")
    return OperationFailed(f"{what}: {exc}", code="s3_unreachable")


class S3Store:
    def __init__(self, endpoint: S3Endpoint, *, part_size: int,
                 client_factory: ClientFactory = make_client, retry_delay: float = 0.5) -> None:
        self.endpoint = endpoint
        self.bucket = endpoint.bucket
        self.part_size = part_size
        self._client = client_factory(endpoint)
        self._retry_delay = retry_delay

    async def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, Bucket=self.bucket, **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _error(exc, what) from exc

    async def check(self) -> None:
        """The bucket exists and these credentials may write and delete in it."""
        await self._call(f"bucket {self.bucket}", self._client.head_bucket)
        probe = ".strata-write-probe"
        await self._call("write probe", self._client.put_object, Key=probe, Body=b"strata")
        await self._call("write probe", self._client.delete_object, Key=probe)

    async def head(self, key: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(key, self._client.head_object, Key=key)
        except NotFound:
            return None
        return result

    async def read_chunks(self, key: str) -> tuple[int, str | None, AsyncIterator[bytes]]:
        """(size, sha256 from metadata, chunks): ranged GETs, each retried alone."""
        head = await self.head(key)
        if head is None:
            raise NotFound(f"object {key} does not exist in bucket {self.bucket}")
        size = int(head["ContentLength"])
        sha = head.get("Metadata", {}).get(SHA_KEY)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, size, self.part_size):
                end = min(size, start + self.part_size) - 1
                yield await self._ranged(key, start, end)

        return size, sha, chunks()

    async def _ranged(self, key: str, start: int, end: int) -> bytes:
        def get() -> bytes:
            body: bytes = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()
            if len(body) != end - start + 1:
                raise OperationFailed(f"short read of {key} at {start}")
            return body

        for attempt in range(RETRIES):
            try:
                return await asyncio.to_thread(get)
            except (botocore.exceptions.BotoCoreError, OperationFailed) as exc:
                if attempt == RETRIES - 1:
                    raise _error(exc, f"reading {key} bytes {start}-{end}") from exc
                await asyncio.sleep(self._retry_delay * (2 ** attempt))
            except botocore.exceptions.ClientError as exc:
                raise _error(exc, f"reading {key}") from exc
        raise AssertionError("unreachable")

    async def upload(self, files: FileStores, src_path: str, key: str,
                     progress: Callable[[float], None] | None = None) -> tuple[int, Digest]:
        """Returns (size, digest) once the object is whole and verified by a HEAD."""
        if await self.head(key) is not None:
            raise Conflict(f"object {key} already exists in {self.bucket}; "
                           "a ready object is never overwritten")
        size, digest = await self._hash(files, src_path)
        meta = {SHA_KEY: digest.sha256}
        src = await files.open_read(src_path)
        try:
            if size <= self.part_size:
                await self._call(key, self._client.put_object, Key=key,
                                 Body=await src.read(size), Metadata=meta, IfNoneMatch="*")
            else:
                await self._multipart(src, key, size, meta, progress)
        finally:
            await src.close()
        head = await self.head(key)
        if head is None or int(head["ContentLength"]) != size or \
                head.get("Metadata", {}).get(SHA_KEY) != digest.sha256:
            raise OperationFailed(f"object {key} is not what was sent", code="s3_failed")
        return size, digest

    async def _hash(self, files: FileStores, path: str) -> tuple[int, Digest]:
        """The sha256 goes into the object's metadata, so it is known before sending;
        the chunk manifest is made in the same read."""
        size = 0
        src = await files.open_read(path)
        hasher = ManifestHasher(src.size)
        try:
            async for chunk in src.chunks(self.part_size):
                await hasher.update(chunk)
                size += len(chunk)
        finally:
            await src.close()
        return size, await hasher.result()

    async def _multipart(self, src: FileReader, key: str, size: int, meta: dict[str, str],
                         progress: Callable[[float], None] | None) -> None:
        upload = await self._call(key, self._client.create_multipart_upload, Key=key,
                                  Metadata=meta)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, self.part_size), 1):
                chunk = await src.read(self.part_size)
                part = await self._call(key, self._client.upload_part, Key=key,
                                        UploadId=upload_id, PartNumber=number, Body=chunk)
                parts.append({"ETag": part["ETag"], "PartNumber": number})
                if progress:
                    progress(min(99.0, 100.0 * (start + len(chunk)) / size))
            await self._call(key, self._client.complete_multipart_upload, Key=key,
                             UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            await self._call(key, self._client.abort_multipart_upload, Key=key,
                             UploadId=upload_id)
            raise

    async def delete(self, key: str) -> bool:
        if await self.head(key) is None:
            return False
        await self._call(key, self._client.delete_object, Key=key)
        return True


    async def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        """(key, length) of every object under `prefix`, page by page."""
        found: list[tuple[str, int]] = []
        token: dict[str, str] = {}
        while True:
            page = await self._call(f"listing {prefix}", self._client.list_objects_v2,
                                    Prefix=prefix, **token)
            found += [(str(o["Key"]), int(o["Size"])) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": str(page["NextContinuationToken"])}

    async def unfinished_uploads(self, prefix: str) -> list[str]:
        """The keys of multipart uploads begun under `prefix` and neither completed nor
        aborted (an agent that died mid-upload): their parts take space."""
        keys: list[str] = []
        marker: dict[str, str] = {}
        while True:
            page = await self._call(f"listing uploads under {prefix}",
                                    self._client.list_multipart_uploads, Prefix=prefix,
                                    **marker)
            keys += [str(u["Key"]) for u in page.get("Uploads", [])]
            if not page.get("IsTruncated"):
                return keys
            marker = {"KeyMarker": str(page["NextKeyMarker"]),
                      "UploadIdMarker": str(page["NextUploadIdMarker"])}
