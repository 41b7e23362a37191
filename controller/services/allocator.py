"""The primary storage allocator: where a volume goes when its request names no storage.

Pure logic over facts the volume service gathers (CloudStack's storage pool allocators,
reduced to one policy). A storage is a candidate when

1. it is `ready` (a storage in maintenance, being created or deleted is skipped);
2. it carries every tag the request asks for;
3. nothing else rules it out: a host whose agent can work on it, the matrix cell the
   volume's source needs (the service's checks, `Candidate.refusal`);
4. the volume, and the image cache it needs there if that storage lacks one, keep it at
   or below its allocation threshold.

Among candidates the one with the most bytes left below its threshold after the
allocation wins (ties: the lower percent used after, then the name), so large empty
storages fill first and none is pushed to its threshold while another has room. The
choice is made on the rows as read; the reservation itself
(`db/transitions.reserve_capacity`) checks the threshold again, so a concurrent request
that took the room meanwhile gets the usual 409.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controller.db.models import StoreState
from controller.db.transitions import percent_text, used_percent
from shared.errors import InsufficientCapacity


@dataclass(frozen=True)
class Candidate:
    """One primary storage as the allocator sees it. `extra`: bytes besides the volume the
    allocation takes there (an image cache to fill); `refusal`: why the service's checks
    rule it out, if they do."""

    id: str
    name: str
    state: str
    tags: frozenset[str]
    capacity_total: int
    overprovision_factor: float
    allocated: int
    threshold: float
    extra: int = 0
    refusal: str | None = None

    def used_after(self, size: int) -> float:
        """Percent of the over-provisioned total allocated once `size` (and `extra`) are."""
        return used_percent(self.allocated + size + self.extra, self.capacity_total,
                            self.overprovision_factor)

    def room_after(self, size: int) -> float:
        """Bytes still allocatable below the threshold once `size` (and `extra`) are."""
        ceiling = self.capacity_total * self.overprovision_factor * self.threshold / 100
        return ceiling - self.allocated - size - self.extra


@dataclass(frozen=True)
class Allocation:
    chosen: Candidate
    used_after: float
    # (storage name, why it was not taken), in the order the storages were given.
    skipped: tuple[tuple[str, str], ...]

    def explain(self, tags: Iterable[str]) -> str:
        """The job's record of the choice, e.g. `picked ps-2: tags [ssd] matched, 61% used
        after, threshold 90%; ps-1 skipped: above threshold (95% after, threshold 90%)`."""
        wanted = sorted(tags)
        matched = f"tags [{', '.join(wanted)}] matched" if wanted else "no tags asked"
        text = (f"picked {self.chosen.name}: {matched}, {percent_text(self.used_after)} used "
                f"after, threshold {self.chosen.threshold:g}%")
        return "; ".join([text, *(f"{name} skipped: {why}" for name, why in self.skipped)])


def skip_reason(c: Candidate, size: int, tags: frozenset[str]) -> str | None:
    """Why `c` cannot take `size` bytes with `tags`; None when it can."""
    if c.state != StoreState.READY:
        return f"state {c.state}, not ready"
    missing = sorted(tags - c.tags)
    if missing:
        return f"lacks tags [{', '.join(missing)}]"
    if c.refusal is not None:
        return c.refusal
    if c.room_after(size) < 0:
        return (f"above threshold ({percent_text(c.used_after(size))} after, threshold "
                f"{c.threshold:g}%)")
    return None


def allocate(candidates: Sequence[Candidate], size: int,
             tags: Iterable[str] = ()) -> Allocation:
    """The storage for a volume of `size` bytes carrying `tags`, by the policy above; an
    `InsufficientCapacity` (409) naming why each storage was skipped when none fits."""
    wanted = frozenset(tags)
    fitting: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for c in candidates:
        reason = skip_reason(c, size, wanted)
        if reason is None:
            fitting.append(c)
        else:
            skipped.append((c.name, reason))
    if not fitting:
        asked = f" with tags [{', '.join(sorted(wanted))}]" if wanted else ""
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped) or "there are none"
        raise InsufficientCapacity(
            f"no primary storage can take a volume of {size} bytes{asked}: {why}",
            code="no_storage_fits")
    best = min(fitting, key=lambda c: (-c.room_after(size), c.used_after(size), c.name))
    passed = [(c.name, "less room below its threshold") for c in fitting if c is not best]
    order = {c.name: i for i, c in enumerate(candidates)}
    return Allocation(best, best.used_after(size),
                      tuple(sorted([*skipped, *passed], key=lambda s: order[s[0]])))
