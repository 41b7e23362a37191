"""The plugin registry: storage types, hypervisor backends, mediators."""

from __future__ import annotations

from typing import Any

from controller.plugins.interfaces import (
    DataStoreProvider,
    ImageDataStoreDriver,
    PrimaryDataStoreDriver,
    PrimaryStorageBackend,
    PrimaryToBackupStorageMediator,
    StorageRole,
)
from shared.errors import InvalidInput, Unsupported


class PluginRegistry:
    def __init__(self) -> None:
        self.providers: dict[tuple[StorageRole, str], DataStoreProvider] = {}
        self.hypervisors: set[str] = set()
        self.backends: dict[tuple[str, str], PrimaryStorageBackend] = {}
        self.mediators: dict[tuple[str, str, str], PrimaryToBackupStorageMediator] = {}

    def add_provider(self, provider: DataStoreProvider) -> None:
        self.providers[(provider.role, provider.type)] = provider

    def add_hypervisor(self, name: str) -> None:
        self.hypervisors.add(name)

    def add_backend(self, backend: PrimaryStorageBackend) -> None:
        self.backends[(backend.primary_type, backend.hypervisor)] = backend

    def add_mediator(self, mediator: PrimaryToBackupStorageMediator) -> None:
        key = (mediator.primary_type, mediator.backup_type, mediator.hypervisor)
        self.mediators[key] = mediator

    def provider(self, role: StorageRole, type_: str) -> DataStoreProvider:
        try:
            return self.providers[(role, type_)]
        except KeyError:
            known = sorted(t for r, t in self.providers if r is role)
            raise InvalidInput(
                f"unknown {role} storage type {type_!r}; known types: {', '.join(known)}",
                code="unknown_storage_type",
            ) from None

    def primary_driver(self, type_: str) -> PrimaryDataStoreDriver:
        driver = self.provider(StorageRole.PRIMARY, type_).driver
        assert isinstance(driver, PrimaryDataStoreDriver)
        return driver

    def image_driver(self, type_: str) -> ImageDataStoreDriver:
        driver = self.provider(StorageRole.BACKUP, type_).driver
        assert isinstance(driver, ImageDataStoreDriver)
        return driver

    def backend(self, primary_type: str, hypervisor: str) -> PrimaryStorageBackend:
        try:
            return self.backends[(primary_type, hypervisor)]
        except KeyError:
            raise Unsupported(
                f"no backend for primary storage {primary_type!r} on hypervisor {hypervisor!r}",
                code="unsupported_combination",
            ) from None

    def mediator(self, primary_type: str, backup_type: str,
                 hypervisor: str) -> PrimaryToBackupStorageMediator:
        try:
            return self.mediators[(primary_type, backup_type, hypervisor)]
        except KeyError:
            raise Unsupported(
                f"no mediator for cell ({primary_type} <- {backup_type}, {hypervisor}): "
                f"primary storage {primary_type!r} cannot use backup storage {backup_type!r} "
                f"on {hypervisor!r}",
                code="unsupported_combination",
            ) from None

    def capabilities(self) -> dict[str, Any]:
        def types(role: StorageRole) -> list[dict[str, str]]:
            return [{"type": p.type, "description": p.description}
                    for (r, _), p in sorted(self.providers.items()) if r is role]

        return {
            "primary_storage_types": types(StorageRole.PRIMARY),
            "backup_storage_types": types(StorageRole.BACKUP),
            "hypervisors": sorted(self.hypervisors),
            "backends": [{"primary": p, "hypervisor": h} for p, h in sorted(self.backends)],
            "matrix": [
                {"primary": p, "backup": b, "hypervisor": h,
                 "directions": ["download", "upload"]}
                for p, b, h in sorted(self.mediators)
            ],
        }
