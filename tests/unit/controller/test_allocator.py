"""The allocator's policy, on plain candidates: which storage a volume goes to, and the
reasons it gives for the choice and for each storage it passed over."""

from __future__ import annotations

import pytest

from controller.services.allocator import Candidate, allocate
from shared.errors import InsufficientCapacity

GiB = 1 << 30


def ps(name: str, allocated: int, total: int = 100 * GiB, *, tags: tuple[str, ...] = (),
       state: str = "ready", threshold: float = 90, factor: float = 1.0, extra: int = 0,
       refusal: str | None = None) -> Candidate:
    return Candidate(id=f"id-{name}", name=name, state=state, tags=frozenset(tags),
                     capacity_total=total, overprovision_factor=factor, allocated=allocated,
                     threshold=threshold, extra=extra, refusal=refusal)


def test_most_room_below_the_threshold_wins_and_the_job_says_why() -> None:
    stores = [ps("ps-1", 85 * GiB, tags=("ssd",)), ps("ps-2", 50 * GiB, tags=("ssd", "fast")),
              ps("ps-3", 0, tags=("hdd",)), ps("ps-4", 10 * GiB, tags=("ssd",))]
    picked = allocate(stores, 10 * GiB, ["ssd"])
    assert picked.chosen.name == "ps-4"
    assert picked.explain(["ssd"]) == (
        "picked ps-4: tags [ssd] matched, 20% used after, threshold 90%; "
        "ps-1 skipped: above threshold (95% after, threshold 90%); "
        "ps-2 skipped: less room below its threshold; "
        "ps-3 skipped: lacks tags [ssd]")


def test_room_is_in_bytes_over_the_overprovisioned_total() -> None:
    """A larger storage, or one over-provisioned, has more room at the same percent; the
    image cache a storage lacks counts against it."""
    small = ps("small", 10 * GiB, total=50 * GiB)
    big = ps("big", 60 * GiB, total=100 * GiB, factor=2.0)
    assert allocate([small, big], GiB).chosen.name == "big"
    uncached = ps("big", 60 * GiB, total=100 * GiB, factor=2.0, extra=90 * GiB)
    assert allocate([small, uncached], GiB).chosen.name == "small"


def test_equal_room_goes_to_the_lower_percent_then_the_name() -> None:
    a = ps("a", 40 * GiB, threshold=90)
    b = ps("b", 30 * GiB, threshold=80)
    assert allocate([a, b], GiB).chosen.name == "b"
    assert allocate([ps("y", 0), ps("x", 0)], GiB).chosen.name == "x"


def test_exactly_at_the_threshold_fits() -> None:
    picked = allocate([ps("edge", 80 * GiB)], 10 * GiB)
    assert picked.chosen.name == "edge" and picked.used_after == 90


def test_none_fits_lists_every_reason() -> None:
    stores = [ps("full", 88 * GiB), ps("down", 0, state="maintenance"),
              ps("hdd", 0, tags=("hdd",)), ps("lonely", 0, refusal="no connected host"),
              ps("new", 0, total=0)]
    with pytest.raises(InsufficientCapacity) as refused:
        allocate(stores, 5 * GiB, ["ssd"])
    assert refused.value.status == 409 and refused.value.code == "no_storage_fits"
    assert refused.value.message == (
        f"no primary storage can take a volume of {5 * GiB} bytes with tags [ssd]: "
        "full: lacks tags [ssd]; down: state maintenance, not ready; hdd: lacks tags [ssd]; "
        "lonely: lacks tags [ssd]; new: lacks tags [ssd]")
    with pytest.raises(InsufficientCapacity) as refused:
        allocate([s for s in stores if s.name != "hdd"], 5 * GiB)
    assert refused.value.message.endswith(
        "full: above threshold (93% after, threshold 90%); down: state maintenance, not "
        "ready; lonely: no connected host; new: above threshold (over 100% after, "
        "threshold 90%)")
    with pytest.raises(InsufficientCapacity, match="there are none"):
        allocate([], GiB)
