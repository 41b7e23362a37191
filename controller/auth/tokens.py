"""API tokens: `st1.<token id>.<secret>`. Only an scrypt hash of the secret is stored, so a
copy of the database lets no one in; the whole token is shown once, when it is made.

Verifying a secret costs an scrypt computation (tens of milliseconds, by design), so a
token whose secret verified is remembered, keyed by a SHA-256 of the whole token; whether
the token is still live is read from the database on every request, so revoking it
locks it out at once, on every controller.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

PREFIX = "st1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1


class Role(enum.StrEnum):
    """Each role may do what the roles below it may: admin > operator > reader."""

    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


def new_id_and_secret() -> tuple[str, str]:
    return str(uuid.uuid4()), secrets.token_urlsafe(32)


def format_token(token_id: str, secret: str) -> str:
    return f"{PREFIX}.{token_id}.{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(token id, secret), or None for something that is not a Strata token."""
    prefix, _, rest = token.partition(".")
    token_id, _, secret = rest.partition(".")
    if prefix != PREFIX or not token_id or not secret or len(token) > 200:
        return None
    return token_id, secret


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     _b64(salt), _b64(digest)])


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(secret.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          dklen=32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@dataclass(frozen=True)
class Caller:
    token_id: str
    name: str
    role: Role


class VerifiedSecrets:
    """Tokens whose secret verified, so that scrypt runs once per token."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._known: set[bytes] = set()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def __contains__(self, token: str) -> bool:
        return self._key(token) in self._known

    def add(self, token: str) -> None:
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known.add(self._key(token))
