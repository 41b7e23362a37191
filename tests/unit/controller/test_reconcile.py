"""The reconcile comparison's rules: what is an orphan, what is work in progress, what
is missing and what is a size mismatch."""

from __future__ import annotations

from controller.services.cache_gc import CacheGcItem, CacheGcSettings, pick
from controller.services.reconcile import Known, Rows, compare, relative
from shared.protocol.objects import StoreObject

JOB = "0b0e0f00-0000-4000-8000-000000000001"
VOL = "11111111-0000-4000-8000-000000000001"
BUSY = "22222222-0000-4000-8000-000000000002"
CACHE = "33333333-0000-4000-8000-000000000003"


def obj(path: str, kind: str = "volume", virtual_size: int | None = 100,
        place: str = "file") -> StoreObject:
    return StoreObject.model_validate({"path": path, "place": place, "kind": kind, "size": 1,
                                       "virtual_size": virtual_size})


def test_orphans_in_progress_missing_and_mismatches() -> None:
    rows = Rows(
        known={f"volumes/{VOL}.qcow2": Known("volume", VOL, "v", "ready", 100),
               "volumes/gone.qcow2": Known("volume", "g", "gone", "ready", 100),
               "volumes/new.qcow2": Known("volume", "n", "new", "creating", 100),
               "imagecache/img": Known("image_cache", "c", "img", "ready", 50),
               "strata-lv": Known("volume", "l", "lv", "ready", 100)},
        busy_ids=frozenset({BUSY, CACHE}), in_flight=frozenset({JOB}))
    orphans, missing, mismatches, in_progress = compare([
        obj(f"volumes/{VOL}.qcow2"),
        obj("imagecache/img", kind="cache", virtual_size=60),
        obj("strata-lv", place="lv", virtual_size=104),  # rounded up to extents
        obj("volumes/stray.qcow2"),
        obj(f"volumes/{BUSY}.restored.qcow2"),
        obj(f"volumes/.strata-tmp-{JOB}.create~0123456789ab-x.qcow2", kind="temporary"),
        obj(f"imagecache/.strata-tmp-cache-{CACHE}-1~0123456789ab-img", kind="temporary"),
        obj(".strata-tmp-ended.create~0123456789ab-y", kind="temporary"),
        obj(".strata-tmp-0123456789ab-old", kind="temporary"),
    ], rows)
    assert [o.path for o in orphans] == ["volumes/stray.qcow2",
                                         ".strata-tmp-ended.create~0123456789ab-y",
                                         ".strata-tmp-0123456789ab-old"]
    assert len(in_progress) == 3
    assert [(m.id, m.path) for m in missing] == [("g", "volumes/gone.qcow2")], \
        "a row being created misses nothing yet"
    assert [(m.path, m.expected, m.found) for m in mismatches] == [("imagecache/img", 50, 60)]


def test_relative_paths() -> None:
    assert relative("/srv/ps", "/srv/ps/volumes/a.qcow2") == "volumes/a.qcow2"
    assert relative("nfs://h/e", "nfs://h/e/imagecache/i") == "imagecache/i"
    assert relative("/srv/ps", "/dev/vg/strata-a") == "strata-a"


def test_cache_gc_picks_least_recently_used_down_to_the_low_watermark() -> None:
    settings = CacheGcSettings(high_watermark=80, low_watermark=50)
    items = [CacheGcItem(cache_id=c, image_id=c, image_name=c, path=f"imagecache/{c}",
                         size=size, last_used_at=used)
             for c, size, used in (("new", 30, 300.0), ("old", 20, 100.0),
                                   ("mid", 20, 200.0))]
    assert pick(items, total=100, used=80, settings=settings) == [], "at the high mark"
    assert [i.cache_id for i in pick(items, total=100, used=85, settings=settings)] == [
        "old", "mid"], "85 - 20 - 20 = 45, below 50"
    assert [i.cache_id for i in pick(items, total=100, used=99, settings=settings)] == [
        "old", "mid", "new"], "all there is, even if the mark is not reached"
    try:
        CacheGcSettings(high_watermark=50, low_watermark=60)
    except ValueError as exc:
        assert "low_watermark" in str(exc)
    else:
        raise AssertionError("a low watermark above the high one was accepted")
