"""API tokens: `st1.<token id>.<secret>`. Only an scrypt hash of the secret is stored, so a
copy of the database lets no one in; the whole token is shown once, when it is made.

Verifying a secret costs an scrypt computation (tens of milliseconds, by design), so a
token whose secret verified is remembered, keyed by a SHA-256 of the whole token, with
its caller. Whether the token is still live is read from the database again once its
entry is older than `KnownTokens.ttl` (a second): revoking through a controller locks the
token out of it at once, and out of every other controller on the database within that.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import time
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


class KnownTokens:
    """Tokens whose secret verified, with their caller and when their row was last read:
    scrypt runs once per token, the row is read at most once per `ttl` seconds."""

    LIMIT = 10_000

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._known: dict[bytes, tuple[Caller, float]] = {}
        # Bumped by each revocation: a row read before it is not remembered after it.
        self.generation = 0

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> tuple[Caller, bool] | None:
        """The caller of a token whose secret verified, and whether its row was read
        within `ttl`; None for a token never verified here."""
        entry = self._known.get(self._key(token))
        if entry is None:
            return None
        return entry[0], time.monotonic() - entry[1] < self.ttl

    def add(self, token: str, caller: Caller, generation: int) -> None:
        """`generation`: the one the row was read in."""
        if generation != self.generation:
            return
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[self._key(token)] = (caller, time.monotonic())

    def forget(self, token_id: str) -> None:
        self.generation += 1
        self._known = {k: v for k, v in self._known.items() if v[0].token_id != token_id}
