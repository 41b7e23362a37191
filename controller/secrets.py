"""Credentials at rest: sealed with a key from the controller's configuration before they
reach the database, so a database dump alone reveals none of them.

Fernet (AES-128-CBC with HMAC-SHA256) authenticates as well as encrypts: a value
tampered with, or sealed under another key, does not open.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from shared.config import secret_file
from shared.errors import StrataError

PREFIX = "enc:v1:"


class SecretKeyMismatch(StrataError):
    status = 500
    default_code = "secret_key_mismatch"


class SecretKeyMissing(StrataError):
    status = 500
    default_code = "secret_key_missing"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_file(cls, path: str, create: bool = True) -> SecretBox:
        """The key in `path`, made (readable by the controller only) on first use when
        `create`; without it a missing file is an error that says where the key is."""

        def make() -> str:
            if not create:
                raise SecretKeyMissing(
                    f"no secret key at {path}, and the database holds credentials sealed "
                    "with one: give this controller the key file of the controllers that "
                    "share the database (secret_key_file)")
            return Fernet.generate_key().decode()

        return cls(secret_file(path, make).encode())

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SecretKeyMismatch("a stored credential is not sealed")
        try:
            return self._fernet.decrypt(sealed[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretKeyMismatch(
                "a stored credential does not open with this controller's secret key "
                "(was secret_key_file changed?)") from None
