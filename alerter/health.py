"""Pure: which feed-health notices the admins are owed (once at the start, once at recovery)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from alerter.models import AdminKind, AdminNotice, FeedErrorKind, FeedState, FeedStatus

OK, FAILING, BLOCKED = FeedStatus.OK, FeedStatus.FAILING, FeedStatus.BLOCKED


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """A feed's health now, and the notice to send if the admins were told otherwise."""

    feed_id: str
    status: FeedStatus
    notice: AdminNotice | None


def feed_status(
    state: FeedState, now: float, started_at: float, failing_after: float
) -> FeedStatus:
    """ok, failing or blocked; failing counts from the last good answer or from start."""
    if state.failures == 0:
        return OK
    if state.error_kind is FeedErrorKind.BLOCKED:
        return BLOCKED
    if state.error_kind is FeedErrorKind.CONFIG:
        return FAILING  # SPOT refuses the feed itself: waiting will not fix it
    since = max(state.last_success or 0.0, started_at)
    if now - since >= failing_after:
        return FAILING
    return state.told if state.told != BLOCKED else FAILING


def feed_health(
    states: Mapping[str, FeedState],
    names: Mapping[str, str],
    feed_ids: Iterable[str],
    now: float,
    started_at: float,
    failing_after: float,
) -> list[FeedHealth]:
    """Each watched feed's status, with a notice where it differs from what admins know."""
    out = []
    for feed_id in feed_ids:
        st = states.get(feed_id)
        if st is None:
            continue
        status = feed_status(st, now, started_at, failing_after)
        notice = None
        if status != st.told:
            name = names.get(feed_id, feed_id)
            since = max(st.last_success or 0.0, started_at)
            if status == OK:
                notice = AdminNotice(
                    AdminKind.FEED_RECOVERED, name, "SPOT answers again.", now, since=None
                )
            elif status == BLOCKED:
                notice = AdminNotice(AdminKind.FEED_BLOCKED, name, st.last_error or "", now)
            else:
                notice = AdminNotice(
                    AdminKind.FEED_FAILING, name, st.last_error or "", now, since=since
                )
        out.append(FeedHealth(feed_id, status, notice))
    return out
