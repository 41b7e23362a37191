"""Credentials sealed at rest with the controller's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.secrets import PREFIX, SecretBox, SecretKeyMismatch


def test_seal_open_and_key_file(tmp_path: Path) -> None:
    key = tmp_path / "secret.key"
    box = SecretBox.from_file(str(key))
    assert key.stat().st_mode & 0o777 == 0o600
    sealed = box.seal("s3cretPassw0rd")
    assert sealed.startswith(PREFIX) and "s3cretPassw0rd" not in sealed
    assert box.seal("s3cretPassw0rd") != sealed, "each seal is fresh"
    assert SecretBox.from_file(str(key)).open(sealed) == "s3cretPassw0rd"


def test_wrong_key_tampering_and_plain_values_do_not_open(tmp_path: Path) -> None:
    sealed = SecretBox.from_file(str(tmp_path / "a.key")).seal("x")
    other = SecretBox.from_file(str(tmp_path / "b.key"))
    with pytest.raises(SecretKeyMismatch, match="secret_key_file"):
        other.open(sealed)
    box = SecretBox.from_file(str(tmp_path / "a.key"))
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretKeyMismatch):
        box.open(tampered)
    with pytest.raises(SecretKeyMismatch, match="not sealed"):
        box.open("plain-password")
