"""The plugin registry: what this controller runs with, looked up by type."""

from __future__ import annotations

from typing import Any, TypeVar

from controller.db.models import BackupStorage, PrimaryStorage
from controller.plugins.interfaces.backend import PrimaryStorageBackend
from controller.plugins.interfaces.backup import BackupStorageProvider
from controller.plugins.interfaces.mediator import Cell
from controller.plugins.interfaces.primary import PrimaryStorageProvider
from controller.plugins.interfaces.stores import Backup, Primary, StorageProvider
from shared.errors import InvalidInput, Unsupported

P = TypeVar("P", bound=StorageProvider[Any, Any])


class PluginRegistry:
    def __init__(self) -> None:
        self.primary_types: dict[str, PrimaryStorageProvider[Any]] = {}
        self.backup_types: dict[str, BackupStorageProvider[Any]] = {}
        self.hypervisors: set[str] = set()
        self.backends: dict[tuple[str, str], PrimaryStorageBackend[Any]] = {}
        self.cells: dict[tuple[str, str, str], Cell] = {}

    def add_primary_type(self, provider: PrimaryStorageProvider[Any]) -> None:
        self.primary_types[provider.type] = provider

    def add_backup_type(self, provider: BackupStorageProvider[Any]) -> None:
        self.backup_types[provider.type] = provider

    def add_hypervisor(self, name: str) -> None:
        self.hypervisors.add(name)

    def add_backend(self, backend: PrimaryStorageBackend[Any]) -> None:
        self.backends[(backend.primary_type, backend.hypervisor)] = backend

    def add_cell(self, cell: Cell) -> None:
        self.cells[cell.key] = cell

    def primary_provider(self, type_: str) -> PrimaryStorageProvider[Any]:
        return _provider(self.primary_types, "primary", type_)

    def backup_provider(self, type_: str) -> BackupStorageProvider[Any]:
        return _provider(self.backup_types, "backup", type_)

    def primary(self, row: PrimaryStorage) -> Primary[Any]:
        """`row` with its settings parsed by its type's provider."""
        return self.primary_provider(row.type).bind(row)

    def backup(self, row: BackupStorage) -> Backup[Any]:
        return self.backup_provider(row.type).bind(row)

    def backend_of(self, store: Primary[Any]) -> PrimaryStorageBackend[Any]:
        """The backend that makes `store`'s volumes."""
        return self.backend(store.row.type, store.row.hypervisor)

    def backend(self, primary_type: str, hypervisor: str) -> PrimaryStorageBackend[Any]:
        try:
            return self.backends[(primary_type, hypervisor)]
        except KeyError:
            raise Unsupported(
                f"no backend for primary storage {primary_type!r} on hypervisor {hypervisor!r}",
                code="unsupported_combination",
            ) from None

    def cell(self, primary_type: str, backup_type: str, hypervisor: str) -> Cell:
        try:
            return self.cells[(primary_type, backup_type, hypervisor)]
        except KeyError:
            raise Unsupported(
                f"no mediator for cell ({primary_type} <- {backup_type}, {hypervisor}): "
                f"primary storage {primary_type!r} cannot use backup storage {backup_type!r} "
                f"on {hypervisor!r}",
                code="unsupported_combination",
            ) from None

    def capabilities(self) -> dict[str, Any]:
        def types(providers: dict[str, P]) -> list[dict[str, str]]:
            return [{"type": p.type, "description": p.description}
                    for _, p in sorted(providers.items())]

        return {
            "primary_storage_types": types(self.primary_types),
            "backup_storage_types": types(self.backup_types),
            "hypervisors": sorted(self.hypervisors),
            "backends": [{"primary": p, "hypervisor": h} for p, h in sorted(self.backends)],
            "matrix": [
                {"primary": p, "backup": b, "hypervisor": h,
                 "directions": ["download", "upload"]}
                for p, b, h in sorted(self.cells)
            ],
        }


def _provider(providers: dict[str, P], role: str, type_: str) -> P:
    try:
        return providers[type_]
    except KeyError:
        raise InvalidInput(
            f"unknown {role} storage type {type_!r}; known types: {', '.join(sorted(providers))}",
            code="unknown_storage_type",
        ) from None
