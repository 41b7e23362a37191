"""Validation of names and paths that reach a filesystem.

Operator-given names are labels only; files are named after object ids. Still, every
name is checked here so that `/`, `..` and control characters never get anywhere.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection

from shared.errors import InvalidInput

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def validate_name(name: str, what: str = "name") -> str:
    """A resource name: letters, digits, `.`, `_`, `-` and spaces; no `/` and no `..`."""
    if ".." in name or "/" in name or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_', '-' or spaces, "
            "starting with a letter or digit; '/' and '..' are not allowed"
        )
    return name


def validate_file_name(name: str) -> str:
    """A single path component the agent creates: never a separator, never `..`."""
    if ".." in name or not _FILE_RE.fullmatch(name):
        raise InvalidInput(f"invalid file name {name!r}")
    return name


def validate_abs_path(path: str, what: str = "path") -> str:
    """An absolute, already-normalised path: no `..`, no `//`, no trailing slash."""
    if (
        not path.startswith("/")
        or posixpath.normpath(path) != path
        or any(part == ".." for part in path.split("/"))
        or "\x00" in path
    ):
        raise InvalidInput(f"invalid {what} {path!r}: must be an absolute normalised path")
    return path


_PLAIN_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")


def validate_plain_path(path: str, what: str = "directory") -> str:
    """A directory Strata creates things in: absolute, normalised, and only letters,
    digits, `.`, `_`, `-` and `/`, so no shell, glob or control character ever reaches a
    host."""
    validate_abs_path(path, what)
    if not _PLAIN_PATH_RE.fullmatch(path):
        raise InvalidInput(f"invalid {what} {path!r}: use only letters, digits, '.', '_', "
                           "'-' and '/'")
    return path


_HOST_RE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9-]{0,62}(\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]+\])$")
NFS_SCHEME = "nfs://"


def is_nfs_url(path: str) -> bool:
    return path.startswith(NFS_SCHEME)


def validate_host(host: str) -> str:
    """A server's DNS name, IPv4 address or bracketed IPv6 address."""
    if not _HOST_RE.fullmatch(host):
        raise InvalidInput(f"invalid server name {host!r}: expected a DNS name, an IPv4 "
                           "address or an [IPv6] address")
    return host


def split_nfs_url(url: str) -> tuple[str, str]:
    """`nfs://server/abs/path` as (server, /abs/path), both validated."""
    if not is_nfs_url(url):
        raise InvalidInput(f"invalid NFS URL {url!r}: must start with {NFS_SCHEME}")
    server, sep, path = url[len(NFS_SCHEME):].partition("/")
    if not _HOST_RE.fullmatch(server) or not sep:
        raise InvalidInput(f"invalid NFS URL {url!r}: expected nfs://<server>/<absolute path>")
    return server, validate_abs_path("/" + path, "NFS path")


def validate_store_path(path: str) -> str:
    """Where a storage keeps a file: an absolute path on the host, or an `nfs://` URL for
    a storage the host reaches through libnfs."""
    if is_nfs_url(path):
        split_nfs_url(path)
        return path
    return validate_abs_path(path)


TEMP_PREFIX = ".strata-tmp-"
# What precedes the final file's name in a temporary name: the writing task's id and `~`
# (task ids never hold a `~`), then a random part. Older names have no task id.
TEMP_HEAD = re.compile(re.escape(TEMP_PREFIX) + r"(?:([A-Za-z0-9._:-]+)~)?[0-9a-f]{12}-")


def temp_task_id(name: str) -> str | None:
    """The id of the task that writes temporary file `name`; None for any other name and
    for temporaries of the older kind, which carry none."""
    head = TEMP_HEAD.match(name)
    return head.group(1) if head else None


def task_in_flight(task_id: str, in_flight: Collection[str]) -> bool:
    """Whether `in_flight` names the task, or the job it is a step of (`<job id>.<step>`,
    attempts included)."""
    return task_id in in_flight or task_id.split(".", 1)[0] in in_flight


_OBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9._:~-]{1,255}$")


def validate_object_path(path: str) -> str:
    """`<directory>/<file>` as a store's listing names a file: one directory below the
    store's root and one file in it (temporary names included), never `..`."""
    directory, sep, name = path.partition("/")
    if (not sep or name in (".", "..") or not _OBJECT_NAME_RE.fullmatch(name)
            or ".." in directory or not _FILE_RE.fullmatch(directory)):
        raise InvalidInput(f"invalid object path {path!r}: expected <directory>/<file name>")
    return path


def join_under(root: str, name: str) -> str:
    """`root/name` with both halves validated, so the result stays under root."""
    return posixpath.join(validate_abs_path(root, "storage root"), validate_file_name(name))


_IQN_RE = re.compile(
    r"^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
    r"(:[a-z0-9][a-z0-9.:_-]*)?$"
)
_EUI_RE = re.compile(r"^eui\.[0-9A-F]{16}$")
_NAA_RE = re.compile(r"^naa\.([0-9A-F]{16}|[0-9A-F]{32})$")


def validate_iqn(name: str) -> str:
    """An iSCSI name (RFC 3720): `iqn.YYYY-MM.reversed.domain[:suffix]`, `eui.` or `naa.`."""
    if len(name.encode()) > 223 or not (
        _IQN_RE.fullmatch(name) or _EUI_RE.fullmatch(name) or _NAA_RE.fullmatch(name)
    ):
        raise InvalidInput(
            f"invalid iSCSI name {name!r}: expected iqn.YYYY-MM.reversed.domain[:name] "
            "(lower case), eui.<16 hex> or naa.<16 or 32 hex>"
        )
    return name
