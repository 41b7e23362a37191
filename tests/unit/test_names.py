"""Names and paths that reach a filesystem."""

from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.names import (
    join_under,
    split_nfs_url,
    validate_abs_path,
    validate_file_name,
    validate_iqn,
    validate_name,
    validate_store_path,
)


@pytest.mark.parametrize("name", ["vm1-root", "Image 2024.1", "a", "x_y.z"])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "x..y", "-lead", " lead",
                                  "a\x00b", "é" * 3, "a" * 129])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_name(name)


@pytest.mark.parametrize("path", ["relative", "/a/../b", "/a//b", "/a/", "/a/./b", "/a\x00"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(InvalidInput):
        validate_abs_path(path)


def test_join_under_stays_under_root() -> None:
    assert join_under("/srv/store", "abc.qcow2") == "/srv/store/abc.qcow2"
    for bad in ("../etc", "a/b", ".hidden", ""):
        with pytest.raises(InvalidInput):
            validate_file_name(bad)
        with pytest.raises(InvalidInput):
            join_under("/srv/store", bad)


@pytest.mark.parametrize("iqn", ["iqn.2026-11.org.strata:vol-1", "iqn.1993-08.org.debian:01:ab",
                                 "eui.02004567A425678D", "naa.52004567BA64678D"])
def test_good_iscsi_names(iqn: str) -> None:
    assert validate_iqn(iqn) == iqn


@pytest.mark.parametrize("iqn", ["iqn.2026-13.org.x", "IQN.2026-11.org.x", "iqn.2026-11.Org.x",
                                 "iqn.2026-11.org.x:a b", "iqn.26-11.org.x", "eui.123",
                                 "host-a", "iqn.2026-11.org.x:" + "a" * 220])
def test_bad_iscsi_names(iqn: str) -> None:
    with pytest.raises(InvalidInput):
        validate_iqn(iqn)


@pytest.mark.parametrize(("path", "split"), [
    ("nfs://127.0.0.1/srv/nfs/volumes", ("127.0.0.1", "/srv/nfs/volumes")),
    ("nfs://nfs-1.example.org/exports/a.qcow2", ("nfs-1.example.org", "/exports/a.qcow2")),
    ("nfs://[fd00::1]/e", ("[fd00::1]", "/e")),
])
def test_nfs_urls(path: str, split: tuple[str, str]) -> None:
    assert validate_store_path(path) == path
    assert split_nfs_url(path) == split


@pytest.mark.parametrize("path", [
    "nfs://127.0.0.1/srv/../etc", "nfs://127.0.0.1", "nfs:///srv", "nfs://a b/srv",
    "nfs://127.0.0.1/srv//x", "nfs://127.0.0.1/srv/", "nfs://h;rm/x", "relative/path",
    "smb://host/share",
])
def test_bad_store_paths(path: str) -> None:
    with pytest.raises(InvalidInput):
        validate_store_path(path)
