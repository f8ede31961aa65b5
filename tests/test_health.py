"""Feed health: what the admins are told, once when it starts and once when it ends."""

from __future__ import annotations

import pytest

from alerter.health import BLOCKED, FAILING, OK, feed_health, feed_status
from alerter.models import AdminKind, FeedErrorKind, FeedState

UNAV, BLOCK, CONF = FeedErrorKind.UNAVAILABLE, FeedErrorKind.BLOCKED, FeedErrorKind.CONFIG

START = 1_800_000_000.0
AFTER = 15 * 60.0


def state(**kw: object) -> FeedState:
    return FeedState(feed_id="F1", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("st", "now", "expected"),
    [
        pytest.param(state(), START + 9999, OK, id="no-failure"),
        pytest.param(state(failures=3, error_kind=UNAV), START + 60, OK,
                     id="failing-briefly-still-ok"),
        pytest.param(state(failures=9, error_kind=UNAV), START + AFTER, FAILING,
                     id="failing-since-start"),
        pytest.param(state(failures=9, error_kind=UNAV, last_success=START + 600),
                     START + AFTER + 599, OK, id="counted-from-last-good-answer"),
        pytest.param(state(failures=9, error_kind=UNAV, last_success=START - 86400),
                     START + 60, OK, id="old-success-counts-from-start"),
        pytest.param(state(failures=1, error_kind=BLOCK), START + 1, BLOCKED, id="403-at-once"),
        pytest.param(state(failures=1, error_kind=CONF), START + 1, FAILING,
                     id="config-fault-at-once"),
        pytest.param(state(failures=2, error_kind=UNAV, told=FAILING), START + 60,
                     FAILING, id="still-failing-once-told"),
    ],
)  # fmt: skip
def test_feed_status(st: FeedState, now: float, expected: str) -> None:
    assert feed_status(st, now, START, AFTER) == expected


@pytest.mark.parametrize(
    ("st", "kind"),
    [
        pytest.param(state(failures=1, error_kind=BLOCK, last_error="HTTP 403"),
                     AdminKind.FEED_BLOCKED, id="blocked"),
        pytest.param(state(failures=50, error_kind=UNAV, last_error="timed out"),
                     AdminKind.FEED_FAILING, id="failing"),
        pytest.param(state(told=FAILING), AdminKind.FEED_RECOVERED, id="recovered"),
        pytest.param(state(told=BLOCKED), AdminKind.FEED_RECOVERED, id="unblocked"),
        pytest.param(state(told=FAILING, failures=50, error_kind=UNAV), None,
                     id="told-already"),
        pytest.param(state(), None, id="fine"),
    ],
)  # fmt: skip
def test_feed_health_notices(st: FeedState, kind: AdminKind | None) -> None:
    [h] = feed_health({"F1": st}, {"F1": "Club"}, ["F1"], START + AFTER + 1, START, AFTER)

    assert (h.notice.kind if h.notice else None) == kind
    if h.notice is not None:
        assert h.notice.subject == "Club"
        assert h.notice.detail == (st.last_error or h.notice.detail)


def test_unknown_feeds_are_skipped() -> None:
    assert feed_health({}, {}, ["F9"], START, START, AFTER) == []
