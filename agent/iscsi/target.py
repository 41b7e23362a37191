"""The interface a storage server's iSCSI target implements: one target per volume, its
backing file as LUN 1, an ACL entry per initiator that was granted access."""

from __future__ import annotations

import abc

from shared.errors import Unsupported
from shared.protocol.iscsi import ChapCredentials

VOLUME_LUN = 1


class TargetDriver(abc.ABC):
    """Every call is idempotent: creating what exists or removing what is gone succeeds."""

    @abc.abstractmethod
    async def export(self, target: str, path: str, chap: ChapCredentials | None) -> None:
        """Serves the file at `path` as LUN 1 of `target`, reachable by no initiator yet."""

    @abc.abstractmethod
    async def unexport(self, target: str) -> None:
        """Removes the target with its LUN and every ACL."""

    @abc.abstractmethod
    async def grant(self, target: str, initiator: str) -> list[str]:
        """Lets `initiator` log in to `target`; returns the initiators now allowed."""

    @abc.abstractmethod
    async def revoke(self, target: str, initiator: str) -> list[str]:
        """Stops `initiator` from logging in; returns the initiators still allowed."""

    @abc.abstractmethod
    async def restore(self) -> None:
        """Brings back the saved configuration after an agent or server restart."""

    # Changing a served LUN's backing store (growing it, reverting it to a snapshot). The
    # target and its grants stay; only LUN 1 is taken down and served again.

    async def detach_lun(self, target: str) -> None:
        """Stops serving LUN 1 of `target` (initiators see no LUN), keeping the target."""
        raise Unsupported(f"the {type(self).__name__} cannot take a LUN down",
                          code="lun_refresh_unsupported")

    async def attach_lun(self, target: str, path: str) -> None:
        """Serves `path` as LUN 1 of `target` again, with its size now, to every initiator
        granted before."""
        raise Unsupported(f"the {type(self).__name__} cannot serve a LUN again",
                          code="lun_refresh_unsupported")

    async def refresh_lun(self, target: str, path: str) -> None:
        """Makes the target serve the backing store's size now (after it grew)."""
        await self.detach_lun(target)
        await self.attach_lun(target, path)
