"""The one verdict on the service's health: pure, table-driven."""

from __future__ import annotations

import pytest

from alerter.models import FeedStatus
from alerter.vitals import Vitals, verdict

T0 = 1_700_000_000.0
OK, FAILING, BLOCKED = FeedStatus.OK, FeedStatus.FAILING, FeedStatus.BLOCKED


def vitals(**kw: object) -> Vitals:
    v = Vitals(started_at=T0, last_cycle=T0 + 100, feeds={"Club": OK, "Hut": OK})
    for k, value in kw.items():
        setattr(v, k, value)
    return v


@pytest.mark.parametrize(
    ("v", "now", "healthy", "blind", "words"),
    [
        pytest.param(vitals(), T0 + 120, True, False, "ok", id="healthy"),
        pytest.param(vitals(), T0 + 100 + 300, True, False, "ok", id="two-intervals-is-not-yet"),
        pytest.param(vitals(), T0 + 100 + 301, False, False, "has not run for 301s",
                     id="loop-stalled"),
        pytest.param(vitals(last_cycle=None), T0 + 301, False, False, "has not run",
                     id="never-cycled-since-start"),
        pytest.param(vitals(store_error="disk full"), T0 + 120, False, True,
                     "the state cannot be written: disk full", id="store-failing"),
        pytest.param(vitals(oldest_pending=T0), T0 + 901, False, True, "outbox is stuck",
                     id="outbox-stuck"),
        pytest.param(vitals(oldest_pending=T0), T0 + 120, True, False, "ok",
                     id="outbox-busy-not-stuck"),
        pytest.param(vitals(feeds={"Club": FAILING, "Hut": OK}), T0 + 120, True, False, "ok",
                     id="one-feed-failing-is-not-blind"),
        pytest.param(vitals(feeds={"Club": FAILING, "Hut": BLOCKED}), T0 + 120, False, True,
                     "every feed is failing: Club (failing), Hut (blocked)", id="every-feed"),
    ],
)  # fmt: skip
def test_verdict(v: Vitals, now: float, healthy: bool, blind: bool, words: str) -> None:
    h = verdict(v, now, interval=150.0, stuck_after=900.0)
    assert (h.healthy, h.blind) == (healthy, blind)
    assert words in h.summary()


def test_a_short_interval_still_allows_the_processors_idle_cycle() -> None:
    v = vitals()
    assert verdict(v, T0 + 100 + 59, interval=0.4, stuck_after=900.0).healthy
    assert not verdict(v, T0 + 100 + 61, interval=0.4, stuck_after=900.0).healthy
