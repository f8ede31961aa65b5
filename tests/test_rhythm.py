"""rhythm: a device's newest message, newest time per type, recent times and usual gap."""

from __future__ import annotations

import pytest

from alerter.models import RHYTHM_WINDOW, Message
from alerter.rhythm import Rhythm, advance, usual_gap

T0 = 1_700_000_000


def msg(id_: int, at: int, type_: str = "TRACK") -> Message:
    return Message(id=id_, messenger_id="0-1", messenger_name="Anna", unix_time=at, type=type_)


# -- the newest message -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "new", "last"),
    [
        pytest.param(Rhythm(), [msg(1, T0), msg(3, T0 + 20), msg(2, T0 + 10)], (3, T0 + 20),
                     id="first-batch-newest-by-time"),
        pytest.param(Rhythm(), [msg(9, T0), msg(4, T0 + 10)], (4, T0 + 10),
                     id="time-before-id"),
        pytest.param(Rhythm(), [msg(5, T0), msg(6, T0)], (6, T0), id="same-time-higher-id"),
        pytest.param(Rhythm(9, T0 + 100), [msg(20, T0 + 50)], (9, T0 + 100),
                     id="older-batch-keeps-last"),
        pytest.param(Rhythm(9, T0 + 100), [msg(8, T0 + 100)], (9, T0 + 100),
                     id="same-time-lower-id-keeps-last"),
        pytest.param(Rhythm(9, T0 + 100), [msg(10, T0 + 100)], (10, T0 + 100),
                     id="same-time-higher-id-replaces"),
        pytest.param(Rhythm(9, T0 + 100), [msg(2, T0 + 101)], (2, T0 + 101),
                     id="newer-batch-replaces"),
    ],
)  # fmt: skip
def test_advance_last(before: Rhythm, new: list[Message], last: tuple[int, int]) -> None:
    after = advance(before, new)
    assert (after.last_message_id, after.last_time) == last


def test_last_by_type_keeps_the_newest_time_of_each_type() -> None:
    before = Rhythm(9, T0 + 100, (T0 + 100,), {"TRACK": T0 + 100, "HELP": T0})

    after = advance(
        before,
        [
            msg(20, T0 + 50),
            msg(21, T0 + 60, "HELP"),
            msg(23, T0 + 80, "OK"),
            msg(22, T0 + 70, "OK"),
        ],
    )

    assert after.last_by_type == {"TRACK": T0 + 100, "HELP": T0 + 60, "OK": T0 + 80}
    assert before.last_by_type == {"TRACK": T0 + 100, "HELP": T0}  # not changed in place


def test_recent_times_merged_distinct_newest_first() -> None:
    before = advance(Rhythm(), [msg(1, T0), msg(2, T0 + 10)])

    after = advance(before, [msg(3, T0 + 10), msg(4, T0 + 5), msg(5, T0 + 30)])

    assert before.recent_times == (T0 + 10, T0)
    assert after.recent_times == (T0 + 30, T0 + 10, T0 + 5, T0)


def test_recent_times_keep_the_newest_window() -> None:
    full = advance(Rhythm(), [msg(i, T0 + 60 * i) for i in range(RHYTHM_WINDOW)])
    assert len(full.recent_times) == RHYTHM_WINDOW

    # One newer time and one older than all: the newer one pushes the oldest out, the
    # older one never gets in.
    after = advance(full, [msg(100, T0 + 60 * RHYTHM_WINDOW), msg(101, T0 - 60)])

    assert after.recent_times == tuple(T0 + 60 * i for i in range(RHYTHM_WINDOW, 0, -1))
    assert (after.last_message_id, after.last_time) == (100, T0 + 60 * RHYTHM_WINDOW)


# -- the usual gap --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "gap"),
    [
        pytest.param((), None, id="none"),
        pytest.param((T0,), None, id="one-time"),
        pytest.param((T0 + 10, T0), None, id="one-gap"),
        pytest.param((T0 + 10, T0 + 10, T0), None, id="two-distinct-times"),
        pytest.param((T0 + 40, T0 + 10, T0), 20.0, id="two-gaps-mean-of-middle"),
        pytest.param((T0 + 100, T0 + 40, T0 + 10, T0), 30.0, id="three-gaps-middle"),
        pytest.param((T0 + 200, T0 + 100, T0 + 40, T0 + 10, T0), 45.0,
                     id="four-gaps-mean-of-middle"),
        pytest.param((T0, T0 + 100, T0 + 10, T0 + 40), 30.0, id="any-order"),
        pytest.param((T0 + 40, T0 + 40, T0 + 10, T0), 20.0, id="duplicates-ignored"),
        pytest.param((T0 + 1000, T0 + 20, T0 + 10, T0), 10.0, id="median-not-mean"),
    ],
)  # fmt: skip
def test_usual_gap(times: tuple[int, ...], gap: float | None) -> None:
    assert usual_gap(times) == gap
