"""The remembered API tokens: a revocation is never undone by a read that began before
it, and an entry goes stale after its time to live."""

from __future__ import annotations

from controller.auth.tokens import Caller, KnownTokens, Role

ADMIN = Caller("t1", "admin", Role.ADMIN)


def test_a_read_from_before_a_revocation_is_not_remembered() -> None:
    known = KnownTokens()
    generation = known.generation
    known.forget("t1")  # revoked while the row was being read
    known.add("st1.t1.secret", ADMIN, generation)
    assert known.get("st1.t1.secret") is None
    known.add("st1.t1.secret", ADMIN, known.generation)
    assert known.get("st1.t1.secret") == (ADMIN, True)
    known.forget("t1")
    assert known.get("st1.t1.secret") is None


def test_entries_go_stale_but_keep_the_verified_secret() -> None:
    known = KnownTokens(ttl=0)
    known.add("st1.t1.secret", ADMIN, known.generation)
    assert known.get("st1.t1.secret") == (ADMIN, False)
    assert known.get("st1.t1.other") is None
