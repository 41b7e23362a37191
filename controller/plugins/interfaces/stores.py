"""A store as plugins see it: its row and its settings, parsed once into its type's
config model. Credentials stay sealed in the settings until a plugin opens one for the
command that needs it (`ctx.secrets.open`)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from controller.db.models import BackupStorage, PrimaryStorage
from controller.secrets import SecretBox
from shared.names import validate_plain_path

# The validation context of settings read back from a row.
_STORED: dict[str, Any] = {"stored": True}


def _unchecked_when_sealed(value: Any, handler: ValidatorFunctionWrapHandler,
                           info: ValidationInfo) -> Any:
    """A stored credential is sealed text, longer than the clear one its limits are
    meant for: only its type is checked then."""
    if info.context is _STORED and isinstance(value, str):
        return value
    return handler(value)


# Marks a settings field as a credential (`Annotated[str, Field(...), SECRET]`): sealed
# in the database, never shown by the API.
SECRET = WrapValidator(_unchecked_when_sealed)

# Marks a settings field as a directory Strata creates things in on a host: a plain path,
# which the storage path policy confines (`controller/services/paths.py`).
HOST_DIR = AfterValidator(validate_plain_path)
HostDir = Annotated[str, HOST_DIR]


class StoreConfig(BaseModel):
    """The settings of a storage type: checked once when the store is made, parsed from
    its row whenever a plugin needs them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        return frozenset(name for name, field in cls.model_fields.items()
                         if any(m is SECRET for m in field.metadata))

    def host_dirs(self) -> list[str]:
        return [value for name, field in type(self).model_fields.items()
                if any(m is HOST_DIR for m in field.metadata)
                and isinstance(value := getattr(self, name), str)]

    def servers(self) -> list[str]:
        """The network servers hosts reach for this store (names or addresses), whose
        routes a host's network report shows."""
        return []

    @classmethod
    def from_row(cls, stored: dict[str, Any]) -> Self:
        return cls.model_validate(stored, context=_STORED)

    def sealed(self, secrets: SecretBox) -> dict[str, Any]:
        """The settings as the database keeps them: credentials sealed."""
        stored = self.model_dump(mode="json")
        for name in self.secret_fields():
            if stored.get(name) is not None:
                stored[name] = secrets.seal(str(stored[name]))
        return stored

    @classmethod
    def public(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored settings without their credentials, as the API shows them."""
        secret = cls.secret_fields()
        return {k: v for k, v in stored.items() if k not in secret}


R = TypeVar("R", PrimaryStorage, BackupStorage)
C = TypeVar("C", bound=StoreConfig)


@dataclass(frozen=True)
class Store(Generic[R, C]):
    """A store's row and its settings, parsed by its type's provider."""

    row: R
    config: C

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name


# A primary (backup) storage with its settings parsed: what plugins are given.
Primary = Store[PrimaryStorage, C]
Backup = Store[BackupStorage, C]


@dataclass(frozen=True)
class StorageProvider(Generic[R, C]):
    """The entry point of a storage type, registered at controller start: its name, what
    it is, its settings model; each role adds its lifecycle and driver."""

    type: str
    description: str
    config_model: builtins.type[C]

    def bind(self, row: R) -> Store[R, C]:
        return Store(row, self.config_model.from_row(row.config))
