"""outbox: each target gets each notification once, in order, retried alone with backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from alerter.clock import FakeClock
from alerter.errors import StoreError
from alerter.models import (
    AdminKind,
    AdminNotice,
    Delivery,
    Incident,
    IncidentState,
    Outgoing,
    Rendered,
    Severity,
    TargetHealth,
)
from alerter.notify import AppriseNotifier, SendResult, Target, Targets, load_targets
from alerter.outbox import (
    FAILING_AFTER_ATTEMPTS,
    GIVE_UP_AFTER,
    HealthChange,
    Sender,
    blocks,
    next_due,
    obsolete,
    track_health,
    why_not,
)
from alerter.render import render_admin
from alerter.store import Store

if TYPE_CHECKING:
    from conftest import JsonReceiver

T0 = 1_800_000_000.0
UTC = ZoneInfo("UTC")
CAP = 60.0  # the backoff's ceiling: a minute, never more


# -- helpers ---------------------------------------------------------------------------------


def target(name: str, *tags: str, short: bool = False) -> Target:
    return Target(id=f"id-{name}", label=f"json://{name}", tags=frozenset(tags or ("rescue",)),
                  short=short, plugin=None)  # fmt: skip


def rendered(title: str, severity: Severity = Severity.CRITICAL) -> Rendered:
    return Rendered(
        title=title, body=f"{title}\nlong body", short=f"SMS {title}", severity=severity
    )


def incident(id_: int, state: IncidentState = IncidentState.OPEN) -> Incident:
    return Incident(
        device_id=f"0-{id_}", rule="help", state=state, started_at=T0, opened_at=T0,
        updated_at=T0, id=id_, resolved_at=T0 if state is IncidentState.RESOLVED else None,
    )  # fmt: skip


def enqueue(
    store: Store,
    clock: FakeClock,
    title: str,
    targets: list[Target],
    *,
    incident: Incident | None = None,
    resolution: bool = False,
) -> None:
    """Write one notification to the outbox, as the service does."""
    out = Outgoing(
        rendered(title), "opened", tuple((t.id, t.label, t.short) for t in targets),
        incident_id=incident.id if incident else None, resolution=resolution,
    )  # fmt: skip
    if incident is None:
        store.enqueue([out], clock.now())
    else:
        store.commit_evaluation(
            processed=[], incidents=[incident], events=[], outgoing=[out], at=clock.now()
        )


def set_incident(store: Store, clock: FakeClock, inc: Incident) -> None:
    store.commit_evaluation(processed=[], incidents=[inc], events=[], outgoing=[], at=clock.now())


@dataclass(frozen=True)
class Row:
    title: str
    target: str
    state: str
    attempts: int
    next_attempt: float
    last_error: str | None


def rows(store: Store, target_id: str | None = None) -> list[Row]:
    found = store.conn.execute(
        "SELECT n.title, d.target, d.state, d.attempts, d.next_attempt, d.last_error "
        "FROM deliveries d JOIN notifications n ON n.id = d.notification_id ORDER BY d.id"
    ).fetchall()
    return [Row(*r) for r in found if target_id is None or r[1] == target_id]


@dataclass(frozen=True)
class Call:
    target: str
    title: str
    body: str
    severity: Severity
    ok: bool


@dataclass
class RecordingNotifier:
    """A Notifier that accepts unless a target is `down`, and records every call."""

    down: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)

    async def send(self, target: Target, title: str, body: str, severity: Severity) -> SendResult:
        ok = target.id not in self.down
        self.calls.append(Call(target.id, title, body, severity, ok))
        return SendResult(True) if ok else SendResult(False, "FAILURE; error=500.")

    def got(self, target_id: str) -> list[str]:
        """Titles (or SMS texts) the target accepted, in order."""
        return [c.title or c.body for c in self.calls if c.target == target_id and c.ok]

    def tried(self, target_id: str) -> int:
        return sum(c.target == target_id for c in self.calls)


@dataclass
class AdminHookRecorder:
    """The admin hook: records each notice with the target it must not go to."""

    heard: list[tuple[AdminNotice, str | None]] = field(default_factory=list)

    def __call__(self, notice: AdminNotice, exclude: str | None) -> None:
        self.heard.append((notice, exclude))

    def kinds(self) -> list[tuple[AdminKind, str | None]]:
        return [(n.kind, exclude) for n, exclude in self.heard]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def admin() -> AdminHookRecorder:
    return AdminHookRecorder()


A, B, C = target("a"), target("b"), target("c")


def sender_for(
    store: Store,
    clock: FakeClock,
    notifier: Any,
    admin: Callable[[AdminNotice, str | None], None],
    *targets: Target,
) -> Sender:
    config = Targets(tuple(targets or (A, B, C)))
    return Sender(store, config, notifier, clock, admin)


def advance_to_retry(store: Store, clock: FakeClock) -> None:
    """Move the clock just past the latest retry time of anything pending."""
    pending = [r.next_attempt for r in rows(store) if r.state == "pending"]
    assert pending, "nothing is pending"
    clock.t = max(clock.t, *pending) + 0.001


# -- one target failing, the real way: Apprise against a local receiver ----------------------


async def test_a_failing_target_is_retried_alone_and_gets_it_once_when_it_recovers(
    tmp_path: Path, store: Store, clock: FakeClock, json_receiver: JsonReceiver
) -> None:
    config = tmp_path / "apprise.txt"
    config.write_text(
        f"rescue,admin={json_receiver.url('/a')}\n"
        f"rescue={json_receiver.url('/b')}\n"
        f"rescue,admin={json_receiver.url('/c')}\n"
    )
    targets = load_targets(config)
    ta, tb, tc = targets.targets
    heard: list[tuple[AdminNotice, str | None]] = []

    def admin_like_the_service(notice: AdminNotice, exclude: str | None) -> None:
        heard.append((notice, exclude))
        chosen = targets.for_tags(["admin"], exclude=exclude)
        out = Outgoing(
            render_admin(notice, clock.now(), UTC), notice.kind.value,
            tuple((t.id, t.label, t.short) for t in chosen),
        )  # fmt: skip
        store.enqueue([out], clock.now())

    sender = Sender(store, targets, AppriseNotifier(), clock, admin_like_the_service)
    json_receiver.fail("/c", 500)
    enqueue(store, clock, "HELP: Alice (Club)", [ta, tb, tc], incident=incident(1))

    # The two healthy targets get it at once; the failing one is refused and waits.
    assert await sender.deliver_due() == 2
    assert [p["title"] for p in json_receiver.accepted("/a")] == ["HELP: Alice (Club)"]
    assert [p["title"] for p in json_receiver.accepted("/b")] == ["HELP: Alice (Club)"]
    assert len(json_receiver.received("/c")) == 1
    [row_c] = rows(store, tc.id)
    assert (row_c.state, row_c.attempts) == ("pending", 1)
    assert "500" in (row_c.last_error or "")

    # Not due yet: no pass sends anything, to anyone.
    assert await sender.deliver_due() == 0
    assert len(json_receiver.posts) == 3

    delays = [row_c.next_attempt - clock.now()]
    for attempt in range(2, 5):
        advance_to_retry(store, clock)
        await sender.deliver_due()
        [row_c] = rows(store, tc.id)
        assert (row_c.state, row_c.attempts) == ("pending", attempt)
        delays.append(row_c.next_attempt - clock.now())
    assert len(json_receiver.received("/c")) == 4
    assert delays == sorted(delays)
    assert delays[0] >= 10
    assert delays[-1] > 2 * delays[0]
    assert max(delays) <= CAP

    # The admins heard once that /c fails, not on /c itself.
    assert [(n.kind, n.subject, ex) for n, ex in heard] == [
        (AdminKind.DELIVERY_FAILING, tc.label, tc.id)
    ]

    json_receiver.recover("/c")
    advance_to_retry(store, clock)
    await sender.deliver_due()
    for _ in range(3):  # later passes send nothing more
        clock.advance(3600)
        await sender.deliver_due()

    assert [p["title"] for p in json_receiver.accepted("/c")] == ["HELP: Alice (Club)"]
    assert [p["title"] for p in json_receiver.received("/c")] == ["HELP: Alice (Club)"] * 5
    assert [p["title"] for p in json_receiver.accepted("/b")] == ["HELP: Alice (Club)"]
    assert [p["title"] for p in json_receiver.accepted("/a")] == [
        "HELP: Alice (Club)",
        f"Delivery failing: {tc.label}",
        f"Delivery recovered: {tc.label}",
    ]
    assert [(n.kind, ex) for n, ex in heard] == [
        (AdminKind.DELIVERY_FAILING, tc.id),
        (AdminKind.DELIVERY_RECOVERED, tc.id),
    ]
    assert {r.state for r in rows(store)} == {"sent"}
    assert store.target_health(tc.id) is not None
    assert store.target_health(tc.id).failures == 0  # type: ignore[union-attr]


# -- backoff and admin notices ---------------------------------------------------------------


async def test_backoff_doubles_from_ten_seconds_and_is_capped_at_minutes(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP", [A])

    delays = []
    for attempt in range(1, 11):
        await sender.deliver_due()
        [row] = rows(store)
        assert row.attempts == attempt
        delays.append(row.next_attempt - clock.now())
        # One second early is too early: nothing is tried.
        clock.t = row.next_attempt - 1
        await sender.deliver_due()
        assert notifier.tried(A.id) == attempt
        clock.t = row.next_attempt

    assert 10 <= delays[0] <= 11
    assert 20 <= delays[1] <= 21
    assert 40 <= delays[2] <= 41
    assert delays == sorted(delays)
    assert delays[-4:] == [CAP] * 4


async def test_admins_hear_once_when_a_target_keeps_failing_and_once_when_it_recovers(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(C.id)
    enqueue(store, clock, "HELP", [A, C])
    first_failure = clock.now()

    for attempt in range(1, FAILING_AFTER_ATTEMPTS + 4):
        await sender.deliver_due()
        told = attempt >= FAILING_AFTER_ATTEMPTS
        assert admin.kinds() == ([(AdminKind.DELIVERY_FAILING, C.id)] if told else [])
        advance_to_retry(store, clock)

    [(failing, _)] = admin.heard
    assert failing.subject == C.label
    assert failing.since == first_failure
    assert "500" in failing.detail

    notifier.down.clear()
    await sender.deliver_due()
    enqueue(store, clock, "HELP update", [A, C])
    await sender.deliver_due()

    assert admin.kinds() == [
        (AdminKind.DELIVERY_FAILING, C.id),
        (AdminKind.DELIVERY_RECOVERED, C.id),
    ]
    recovered = admin.heard[1][0]
    assert recovered.since == first_failure
    assert notifier.got(C.id) == ["HELP", "HELP update"]
    assert notifier.got(A.id) == ["HELP", "HELP update"]


async def test_fewer_failures_than_the_threshold_tell_nobody(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP", [A])
    for _ in range(FAILING_AFTER_ATTEMPTS - 1):
        await sender.deliver_due()
        advance_to_retry(store, clock)
    notifier.down.clear()
    await sender.deliver_due()

    assert notifier.got(A.id) == ["HELP"]
    assert admin.heard == []  # neither failing nor recovered
    health = store.target_health(A.id)
    assert health is not None
    assert health.failures == 0


async def test_a_new_outage_after_a_recovery_is_told_again(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    for title in ("HELP 1", "HELP 2"):
        notifier.down.add(A.id)
        enqueue(store, clock, title, [A])
        for _ in range(FAILING_AFTER_ATTEMPTS):
            await sender.deliver_due()
            advance_to_retry(store, clock)
        notifier.down.clear()
        await sender.deliver_due()

    assert [kind for kind, _ in admin.kinds()] == [
        AdminKind.DELIVERY_FAILING, AdminKind.DELIVERY_RECOVERED,
    ] * 2  # fmt: skip


# -- order, obsolete and vanished deliveries -------------------------------------------------


async def test_a_later_notification_waits_for_an_earlier_one_to_the_same_target(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP", [A, B], incident=incident(1))
    await sender.deliver_due()

    # A works again, but "HELP" is waiting for its retry: "HELP update" must not overtake it.
    notifier.down.clear()
    clock.advance(1)
    enqueue(store, clock, "HELP update", [A, B], incident=incident(1))
    await sender.deliver_due()
    assert notifier.got(A.id) == []
    assert notifier.tried(A.id) == 1
    assert notifier.got(B.id) == ["HELP", "HELP update"]  # B is not held back by A

    advance_to_retry(store, clock)
    await sender.deliver_due()
    assert notifier.got(A.id) == ["HELP", "HELP update"]
    assert notifier.got(B.id) == ["HELP", "HELP update"]


async def test_a_failure_stops_the_pass_for_that_target_only(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    for title in ("first", "second", "third"):
        enqueue(store, clock, title, [A, B], incident=incident(1))
    notifier.down.add(A.id)

    assert await sender.deliver_due() == 3
    assert notifier.tried(A.id) == 1  # "second" and "third" were not tried after "first" failed
    assert notifier.got(B.id) == ["first", "second", "third"]

    notifier.down.clear()
    advance_to_retry(store, clock)
    assert await sender.deliver_due() == 3
    assert notifier.got(A.id) == ["first", "second", "third"]


async def test_a_message_a_target_refuses_never_holds_back_another_incident(
    store: Store, clock: FakeClock, admin: AdminHookRecorder
) -> None:
    """A chat API that refuses one message forever (HTTP 400) still gets the next HELP."""

    class RefusesOne(RecordingNotifier):
        async def send(
            self, target: Target, title: str, body: str, severity: Severity
        ) -> SendResult:
            if title == "HELP: Alice":
                self.calls.append(Call(target.id, title, body, severity, ok=False))
                return SendResult(False, "HTTP 400: message refused")
            return await super().send(target, title, body, severity)

    notifier = RefusesOne()
    sender = sender_for(store, clock, notifier, admin)
    enqueue(store, clock, "HELP: Alice", [A], incident=incident(1))
    await sender.deliver_due()
    enqueue(store, clock, "HELP: Bob", [A], incident=incident(2))
    enqueue(store, clock, "Feed failing: Club", [A])  # an admin notice: no incident
    await sender.deliver_due()

    assert notifier.got(A.id) == ["HELP: Bob", "Feed failing: Club"]
    # A accepted Bob's HELP, so Alice's was due at once too: tried again, refused again.
    assert notifier.tried(A.id) == 4
    advance_to_retry(store, clock)
    await sender.deliver_due()
    assert notifier.tried(A.id) == 5
    assert [r.title for r in rows(store, A.id) if r.state == "pending"] == ["HELP: Alice"]


async def test_once_a_target_accepts_anything_what_waited_for_it_goes_at_once(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP: Alice", [A], incident=incident(1))
    enqueue(store, clock, "HELP update: Alice", [A], incident=incident(1))
    await sender.deliver_due()
    [help_row] = [r for r in rows(store, A.id) if r.title == "HELP: Alice"]
    assert help_row.next_attempt > clock.now()  # waits for its retry

    notifier.down.clear()  # A is back, and the next alert proves it
    enqueue(store, clock, "HELP: Bob", [A], incident=incident(2))
    assert await sender.deliver_due() == 3  # in this one pass, without waiting for the retry

    assert notifier.got(A.id) == ["HELP: Bob", "HELP: Alice", "HELP update: Alice"]


async def test_alerts_of_a_resolved_incident_are_dropped_but_its_resolution_goes_out(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    help_ = incident(1)
    enqueue(store, clock, "HELP: Alice", [A, B], incident=help_)
    await sender.deliver_due()
    clock.advance(5)
    enqueue(store, clock, "HELP update: Alice", [A, B], incident=help_)
    await sender.deliver_due()

    clock.advance(60)
    resolved = replace(help_, state=IncidentState.RESOLVED, resolved_at=clock.now())
    enqueue(store, clock, "HELP cancelled: Alice", [A, B], incident=resolved, resolution=True)
    notifier.down.clear()
    advance_to_retry(store, clock)
    await sender.deliver_due()

    assert notifier.got(A.id) == ["HELP cancelled: Alice"]
    assert notifier.got(B.id) == ["HELP: Alice", "HELP update: Alice", "HELP cancelled: Alice"]
    dropped = [r for r in rows(store, A.id) if r.state == "dropped"]
    assert [r.title for r in dropped] == ["HELP: Alice", "HELP update: Alice"]
    assert all("resolved" in (r.last_error or "") for r in dropped)


async def test_a_resolution_does_not_wait_behind_an_obsolete_retry(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    help_ = incident(1)
    enqueue(store, clock, "HELP: Alice", [A], incident=help_)
    await sender.deliver_due()
    for _ in range(4):  # the HELP to A keeps failing: its next retry is minutes away
        advance_to_retry(store, clock)
        await sender.deliver_due()
    notifier.down.clear()
    resolved = replace(help_, state=IncidentState.RESOLVED, resolved_at=clock.now())
    enqueue(store, clock, "HELP cancelled: Alice", [A], incident=resolved, resolution=True)
    [help_row] = [r for r in rows(store, A.id) if r.title == "HELP: Alice"]
    assert help_row.next_attempt > clock.now() + 30

    await sender.deliver_due()  # now, not when the obsolete HELP's retry comes round

    assert notifier.got(A.id) == ["HELP cancelled: Alice"]


async def test_an_acknowledged_incident_still_gets_its_alerts(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP: Alice", [A], incident=incident(1))
    await sender.deliver_due()
    set_incident(store, clock, incident(1, IncidentState.ACKNOWLEDGED))
    notifier.down.clear()
    advance_to_retry(store, clock)
    await sender.deliver_due()
    assert notifier.got(A.id) == ["HELP: Alice"]


async def test_a_delivery_to_a_target_gone_from_the_config_is_dropped(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    config = Targets((A, B))
    sender = Sender(store, config, notifier, clock, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP", [A, B])
    await sender.deliver_due()
    enqueue(store, clock, "HELP update", [A, B])

    sender.use(Targets((B,)))  # reloaded without A
    notifier.down.clear()
    clock.advance(CAP + 1)
    await sender.deliver_due()
    sender.use(Targets((A, B)))  # and back: what was dropped stays dropped
    clock.advance(3600)
    await sender.deliver_due()

    assert notifier.got(A.id) == []
    assert notifier.tried(A.id) == 1
    assert notifier.got(B.id) == ["HELP", "HELP update"]
    assert [r.state for r in rows(store, A.id)] == ["dropped", "dropped"]
    assert all("no longer in the Apprise config" in (r.last_error or "") for r in rows(store, A.id))
    assert next_due(store.pending_deliveries()) is None


@pytest.mark.parametrize(
    ("incident_id", "state", "resolution", "age", "dropped"),
    [
        pytest.param(1, "open", False, 0, False, id="open-alert"),
        pytest.param(1, "open", False, 3 * GIVE_UP_AFTER, False, id="open-alert-old"),
        pytest.param(1, "acknowledged", False, 0, False, id="acknowledged"),
        pytest.param(1, "resolved", False, 0, True, id="resolved-alert"),
        pytest.param(1, "resolved", True, 0, False, id="resolution"),
        pytest.param(1, "resolved", True, GIVE_UP_AFTER - 1, False, id="resolution-day-old"),
        pytest.param(1, "resolved", True, GIVE_UP_AFTER + 1, True, id="resolution-given-up"),
        pytest.param(None, None, False, GIVE_UP_AFTER - 1, False, id="admin-notice"),
        pytest.param(None, None, False, GIVE_UP_AFTER + 1, True, id="admin-notice-given-up"),
    ],
)
def test_obsolete(
    incident_id: int | None, state: str | None, resolution: bool, age: float, dropped: bool
) -> None:
    d = Delivery(
        id=1, notification_id=1, incident_id=incident_id, target="t", label="t", short=False,
        attempts=3, next_attempt=T0, title="x", body="x", short_text="x",
        severity=Severity.CRITICAL,
        kind="opened", resolution=resolution,
        incident_state=IncidentState(state) if state else None, created_at=T0,
    )  # fmt: skip
    assert (obsolete(d, T0 + age) is not None) is dropped


# -- what each target gets -------------------------------------------------------------------


async def test_short_targets_get_the_sms_text_and_no_title(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sms = target("sms", short=True)
    sender = sender_for(store, clock, notifier, admin, A, sms)
    enqueue(store, clock, "HELP: Alice", [A, sms])
    await sender.deliver_due()

    by_target = {c.target: c for c in notifier.calls}
    assert (by_target[sms.id].title, by_target[sms.id].body) == ("", "SMS HELP: Alice")
    assert (by_target[A.id].title, by_target[A.id].body) == (
        "HELP: Alice",
        "HELP: Alice\nlong body",
    )
    assert by_target[A.id].severity is by_target[sms.id].severity is Severity.CRITICAL


async def test_a_notifier_that_raises_counts_as_a_failure(
    store: Store, clock: FakeClock, admin: AdminHookRecorder
) -> None:
    class Exploding(RecordingNotifier):
        async def send(
            self, target: Target, title: str, body: str, severity: Severity
        ) -> SendResult:
            if target.id == A.id:
                raise RuntimeError("plugin bug")
            return await super().send(target, title, body, severity)

    notifier = Exploding()
    sender = sender_for(store, clock, notifier, admin)
    enqueue(store, clock, "HELP", [A, B])
    assert await sender.deliver_due() == 1

    [row_a] = rows(store, A.id)
    assert (row_a.state, row_a.attempts, row_a.last_error) == ("pending", 1, "RuntimeError")
    assert notifier.got(B.id) == ["HELP"]


# -- restarts and crashes --------------------------------------------------------------------


async def test_a_restart_resumes_the_outbox(
    store_path: Path, clock: FakeClock, admin: AdminHookRecorder
) -> None:
    before = RecordingNotifier(down={A.id})
    store = Store.open(store_path)
    sender = sender_for(store, clock, before, admin)
    enqueue(store, clock, "HELP", [A, B], incident=incident(1))
    await sender.deliver_due()  # B sent, A failed and waits
    enqueue(store, clock, "HELP update", [A, B], incident=incident(1))  # written, never tried
    store.close()

    after = RecordingNotifier()
    store = Store.open(store_path)
    try:
        sender = sender_for(store, clock, after, admin)
        await sender.deliver_due()
        assert after.got(B.id) == ["HELP update"]
        assert after.got(A.id) == []  # still in its backoff, and the update keeps behind it
        advance_to_retry(store, clock)
        await sender.deliver_due()
        clock.advance(3600)
        await sender.deliver_due()
    finally:
        store.close()

    assert before.got(B.id) == ["HELP"]
    assert after.got(B.id) == ["HELP update"]  # "HELP" not again
    assert after.got(A.id) == ["HELP", "HELP update"]


def failing_mark_sent_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, target_id: str
) -> list[int]:
    """The first mark_sent for `target_id` raises, as if the process died there."""
    real = store.mark_sent
    crashed: list[int] = []
    owner = {d.id: d.target for d in store.pending_deliveries()}

    def mark_sent(delivery_id: int, at: float) -> None:
        if owner.get(delivery_id) == target_id and not crashed:
            crashed.append(delivery_id)
            raise StoreError("state database write failed: disk I/O error")
        real(delivery_id, at)

    monkeypatch.setattr(store, "mark_sent", mark_sent)
    return crashed


async def test_a_crash_between_send_and_record_repeats_that_send_only(
    store: Store,
    clock: FakeClock,
    notifier: RecordingNotifier,
    admin: AdminHookRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    enqueue(store, clock, "HELP", [A, B, C])
    crashed = failing_mark_sent_once(store, monkeypatch, B.id)

    with pytest.raises(StoreError):
        await sender.deliver_due()
    assert crashed
    for _ in range(3):
        await sender.deliver_due()
        clock.advance(3600)

    assert notifier.got(B.id) == ["HELP", "HELP"]  # the one allowed duplicate
    assert notifier.got(A.id) == ["HELP"]
    assert notifier.got(C.id) == ["HELP"]
    assert {r.state for r in rows(store)} == {"sent"}


async def test_a_failed_pass_leaves_no_send_in_flight(
    store: Store, clock: FakeClock, admin: AdminHookRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that fails on one target finishes the others' sends before it ends.

    Otherwise the next pass finds a slow target's delivery still pending and sends it a
    second time while the first send is still on its way.
    """

    class SlowB(RecordingNotifier):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()
            self.sending = 0  # sends on their way

        async def send(
            self, target: Target, title: str, body: str, severity: Severity
        ) -> SendResult:
            self.sending += 1
            try:
                if target.id == B.id:
                    await self.release.wait()
                return await super().send(target, title, body, severity)
            finally:
                self.sending -= 1

    notifier = SlowB()
    sender = sender_for(store, clock, notifier, admin)
    enqueue(store, clock, "HELP", [A, B])
    crashed = failing_mark_sent_once(store, monkeypatch, A.id)

    first = asyncio.create_task(sender.deliver_due())
    for _ in range(50):
        await asyncio.sleep(0)
    assert crashed  # A was sent, and recording it failed
    assert notifier.sending == 1  # B is still on its way...
    assert not first.done()  # ...so the pass is not over

    notifier.release.set()
    with pytest.raises(StoreError):
        await first
    assert notifier.sending == 0
    await sender.deliver_due()

    assert notifier.got(A.id) == ["HELP", "HELP"]
    assert notifier.got(B.id) == ["HELP"]


async def test_run_retries_on_the_clock_without_sleeping_for_real(
    store: Store, clock: FakeClock, admin: AdminHookRecorder
) -> None:
    class DownTwice(RecordingNotifier):
        async def send(
            self, target: Target, title: str, body: str, severity: Severity
        ) -> SendResult:
            if self.tried(target.id) >= 2:
                self.down.discard(target.id)
            return await super().send(target, title, body, severity)

    notifier = DownTwice(down={A.id})
    sender = sender_for(store, clock, notifier, admin)
    enqueue(store, clock, "HELP", [A, B])
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(sender.run(stop))
    for _ in range(1000):
        if notifier.got(A.id):
            break
        await asyncio.sleep(0)
    stop.set()
    sender.wake.set()
    await asyncio.wait_for(task, 5)

    assert notifier.got(A.id) == ["HELP"]
    assert notifier.got(B.id) == ["HELP"]
    assert notifier.tried(A.id) == 3
    assert clock.now() - T0 >= 10 + 20  # two backoffs passed on the fake clock...
    assert time.monotonic() - started < 2  # ...not on the real one


# -- the stages, one at a time ---------------------------------------------------------------


def delivery(
    notification_id: int = 1,
    *,
    target_id: str = A.id,
    incident_id: int | None = 1,
    state: IncidentState | None = IncidentState.OPEN,
    resolution: bool = False,
    created_at: float = T0,
) -> Delivery:
    return Delivery(
        id=notification_id, notification_id=notification_id, incident_id=incident_id,
        target=target_id, label=f"label-{target_id}", short=False, attempts=0,
        next_attempt=created_at, title="HELP", body="HELP\nbody", short_text="SMS HELP",
        severity=Severity.CRITICAL, kind="opened", resolution=resolution,
        incident_state=state, created_at=created_at,
    )  # fmt: skip


RESOLVED_BEFORE = "its incident was resolved before it could be delivered"
GIVEN_UP = f"undeliverable for {GIVE_UP_AFTER / 3600:.0f} h"
TARGET_GONE = "its target is no longer in the Apprise config"


@pytest.mark.parametrize(
    ("d", "age", "why"),
    [
        pytest.param(delivery(), 0, None, id="fine"),
        pytest.param(delivery(target_id=C.id), 0, TARGET_GONE, id="target-gone"),
        pytest.param(delivery(state=IncidentState.RESOLVED), 0, RESOLVED_BEFORE,
                     id="resolved-alert"),
        pytest.param(delivery(incident_id=None, state=None), GIVE_UP_AFTER + 1, GIVEN_UP,
                     id="admin-notice-given-up"),
        # Obsolete and gone: the obsolete reason is the one recorded.
        pytest.param(delivery(target_id=C.id, state=IncidentState.RESOLVED), 0,
                     RESOLVED_BEFORE, id="resolved-alert-and-target-gone"),
        pytest.param(delivery(state=IncidentState.RESOLVED, resolution=True), 0, None,
                     id="resolution"),
        pytest.param(delivery(target_id=C.id, state=IncidentState.RESOLVED, resolution=True),
                     0, TARGET_GONE, id="resolution-target-gone"),
    ],
)  # fmt: skip
def test_why_not(d: Delivery, age: float, why: str | None) -> None:
    assert why_not(d, T0 + age, Targets((A, B))) == why


@pytest.mark.parametrize(
    ("waiting", "later", "held"),
    [
        pytest.param(delivery(1), delivery(2), True, id="earlier-holds-later"),
        pytest.param(delivery(2), delivery(1), False, id="later-never-holds-earlier"),
        pytest.param(delivery(7), delivery(7), False, id="not-itself"),
    ],
)
def test_blocks(waiting: Delivery, later: Delivery, held: bool) -> None:
    assert blocks(waiting, later) is held


LABEL = "json://c"
NOW = T0 + 600


def health(failures: int, since: float | None, told: bool) -> TargetHealth:
    return TargetHealth(C.id, LABEL, failures, since, told)


@pytest.mark.parametrize(
    ("previous", "error", "expected"),
    [
        pytest.param(None, None, HealthChange(None, None), id="first-success-no-record"),
        pytest.param(health(0, None, False), None, HealthChange(None, None),
                     id="success-healthy-record"),
        pytest.param(None, "boom", HealthChange(health(1, NOW, False), None),
                     id="failure-1"),
        pytest.param(health(1, T0, False), "boom", HealthChange(health(2, T0, False), None),
                     id="failure-2"),
        pytest.param(
            health(FAILING_AFTER_ATTEMPTS - 1, T0, False), "boom",
            HealthChange(
                health(FAILING_AFTER_ATTEMPTS, T0, True),
                AdminNotice(AdminKind.DELIVERY_FAILING, LABEL, "boom", NOW, since=T0),
            ),
            id="failure-3-tells",
        ),
        pytest.param(
            health(FAILING_AFTER_ATTEMPTS, T0, True), "boom again",
            HealthChange(health(FAILING_AFTER_ATTEMPTS + 1, T0, True), None),
            id="failure-4-tells-no-more",
        ),
        pytest.param(
            health(FAILING_AFTER_ATTEMPTS + 1, T0, True), None,
            HealthChange(
                health(0, None, False),
                AdminNotice(AdminKind.DELIVERY_RECOVERED, LABEL, "Deliveries go through again.",
                            NOW, since=T0),
            ),
            id="recovery-after-told",
        ),
        pytest.param(health(FAILING_AFTER_ATTEMPTS - 1, T0, False), None,
                     HealthChange(health(0, None, False), None), id="recovery-before-told"),
    ],
)  # fmt: skip
def test_track_health(
    previous: TargetHealth | None, error: str | None, expected: HealthChange
) -> None:
    assert track_health(previous, C.id, LABEL, error, NOW) == expected


def test_track_health_dates_the_outage_from_its_first_failure() -> None:
    record: TargetHealth | None = None
    notices: list[AdminNotice] = []
    for attempt in range(FAILING_AFTER_ATTEMPTS + 2):
        change = track_health(record, C.id, LABEL, "boom", T0 + 60 * attempt)
        record = change.health
        notices += [change.notice] if change.notice else []
    change = track_health(record, C.id, LABEL, None, T0 + 3600)
    notices += [change.notice] if change.notice else []

    assert [(n.kind, n.at, n.since) for n in notices] == [
        (AdminKind.DELIVERY_FAILING, T0 + 60 * (FAILING_AFTER_ATTEMPTS - 1), T0),
        (AdminKind.DELIVERY_RECOVERED, T0 + 3600, T0),
    ]
    assert change.health == health(0, None, False)


async def test_use_drops_deliveries_to_a_target_left_out_before_they_are_tried(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin, A, B)
    enqueue(store, clock, "HELP", [A, B])

    sender.use(Targets((B,)))
    assert sender.wake.is_set()  # the run loop does not sleep through the reload
    assert await sender.deliver_due() == 1

    assert notifier.tried(A.id) == 0
    assert notifier.got(B.id) == ["HELP"]
    [row_a] = rows(store, A.id)
    assert (row_a.state, row_a.last_error) == ("dropped", TARGET_GONE)


async def test_the_sender_sleeps_until_the_blocking_retry(
    store: Store, clock: FakeClock, notifier: RecordingNotifier, admin: AdminHookRecorder
) -> None:
    sender = sender_for(store, clock, notifier, admin)
    notifier.down.add(A.id)
    enqueue(store, clock, "HELP: Alice", [A], incident=incident(1))
    enqueue(store, clock, "HELP update: Alice", [A], incident=incident(1))
    await sender.deliver_due()  # the HELP fails; the update waits behind it
    [help_row] = [r for r in rows(store, A.id) if r.title == "HELP: Alice"]

    assert next_due(store.pending_deliveries()) == help_row.next_attempt > clock.now()
