"""Configuration loading common to both daemons: TOML file, then command-line flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.errors import InvalidInput

C = TypeVar("C", bound=BaseModel)

# In the controller's state directory: the admin API token its first start makes, which
# the CLI reads from `./dev start`'s state directory.
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise InvalidInput(f"invalid listen address {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def load_config(cls: type[C], path: str | None, overrides: dict[str, Any]) -> C:
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read config {path}: {exc}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid configuration: {exc}") from exc


def secret_file(path: str, make: Callable[[], str]) -> str:
    """The secret kept in `path`; on first use, `make()` one and keep it there, readable
    by this user only (O_EXCL: two processes starting at once cannot both write it)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
