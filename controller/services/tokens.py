"""Making, listing and revoking API tokens; recognising the caller of a request."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.auth.tokens import (
    Caller,
    KnownTokens,
    Role,
    format_token,
    hash_secret,
    new_id_and_secret,
    parse_token,
    verify_secret,
)
from controller.db.models import ApiToken
from shared.errors import Conflict, NotFound

log = logging.getLogger(__name__)

BOOTSTRAP_NAME = "admin"


class TokenService:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db
        self._known = KnownTokens()

    async def create(self, name: str, role: Role) -> tuple[ApiToken, str]:
        """The new token's row, and the token itself: shown this once, kept nowhere."""
        token_id, secret = new_id_and_secret()
        secret_hash = await asyncio.to_thread(hash_secret, secret)
        async with self._db.begin() as session:
            if await session.scalar(select(ApiToken.id).where(ApiToken.name == name)):
                raise Conflict(f"an API token named {name!r} already exists", code="name_taken")
            row = ApiToken(id=token_id, name=name, role=role, secret_hash=secret_hash)
            session.add(row)
        return row, format_token(token_id, secret)

    async def list(self) -> list[ApiToken]:
        async with self._db() as session:
            return list((await session.scalars(
                select(ApiToken).order_by(ApiToken.created_at))).all())

    async def revoke(self, token_id: str, by: str | None = None) -> ApiToken:
        """`by`: the token asking. A token can't revoke itself, so a caller can't lock
        itself out by mistake; another admin token, or `strata-controller tokens
        revoke`, can."""
        if token_id == by:
            raise Conflict("a token can't revoke itself; revoke it with another admin token "
                           "or with strata-controller tokens revoke", code="revoking_self")
        async with self._db.begin() as session:
            row = await session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no API token with id {token_id}")
            if row.revoked_at is None:
                await session.execute(update(ApiToken).where(ApiToken.id == token_id)
                                      .values(revoked_at=time.time()))
                await session.refresh(row)
        self._known.forget(token_id)
        return row

    async def caller(self, token: str) -> Caller | None:
        """Who presents `token`, or None when it is no live token of this controller."""
        known = self._known.get(token)
        if known is not None and known[1]:
            return known[0]
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        generation = self._known.generation
        async with self._db() as session:
            row = (await session.execute(
                select(ApiToken.name, ApiToken.role, ApiToken.secret_hash)
                .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None)))).first()
        if row is None:
            return None
        if known is None and not await asyncio.to_thread(verify_secret, secret,
                                                          row.secret_hash):
            return None
        caller = Caller(token_id, row.name, Role(row.role))
        self._known.add(token, caller, generation)
        return caller

    async def bootstrap(self, path: str) -> None:
        """On a controller with no token at all, an admin token in `path` (0600): the
        first way in, which `./dev start` and the CLI use."""
        async with self._db() as session:
            if await session.scalar(select(func.count()).select_from(ApiToken)):
                return
        _, token = await self.create(BOOTSTRAP_NAME, Role.ADMIN)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.info("made the bootstrap admin token in %s", path)
