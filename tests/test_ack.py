"""ack: signed tokens, the key, acknowledging an incident, links in alerts, the CLI.

A real store and the real Processor on a fake clock; rules and an Apprise config read
from files; nothing is sent (targets on port 9 are never reached: nothing delivers).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import stat
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from alerter.ack import (
    KEY_BYTES,
    KEY_FILE,
    NAME_MAX,
    AckStatus,
    ack_url,
    clean_name,
    incident_for_token,
    load_key,
    make_token,
    verify,
)
from alerter.cli import main
from alerter.clock import FakeClock
from alerter.config import Config
from alerter.errors import ConfigError, StoreError
from alerter.models import (
    Decision,
    Delivery,
    Device,
    EngineEvent,
    Incident,
    IncidentState,
    Message,
    Reason,
    Received,
    Severity,
    Subject,
)
from alerter.notify import load_targets
from alerter.process import Processor
from alerter.render import SMS_TWO, render
from alerter.rules.loader import load_rules
from alerter.settings import FeedConfig, Settings, load_settings
from alerter.store import Store

T0 = 1_800_000_000  # 2027-01-15 08:00 UTC
FEED = "FEED1"
DEVICE = "0-1"
KEY = bytes(range(32))
PUBLIC_URL = "https://alerts.example.org"
ROOT = Path(__file__).resolve().parent.parent

RULES = """
    rules:
      - name: help
        when: {type: [HELP]}
        notify: [rescue]
        severity: critical
        repeat: 10m
        updates: 10m
        escalate:
          - after: 20m
            notify: [rescue-backup]
      - name: help-cancel
        when: {type: [HELP-CANCEL]}
        resolves: help
        notify: [rescue]
"""

# Targets by name (the last part of the path): `both` carries two of the rule's tags,
# `sms` gets the short form.
APPRISE = """
    rescue=json://127.0.0.1:9/rescue
    rescue-backup=json://127.0.0.1:9/backup
    rescue,rescue-backup=json://127.0.0.1:9/both
    rescue,sms=json://127.0.0.1:9/sms
    admin=json://127.0.0.1:9/admin
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def make_settings(tmp_path: Path, **kw: object) -> Settings:
    return load_settings(
        env_file=None,
        feeds=[FeedConfig(id=FEED, name="Club")],
        state_dir=tmp_path / "state",
        rules=write(tmp_path / "rules.yml", RULES),
        apprise_config=write(tmp_path / "apprise.txt", APPRISE),
        **kw,
    )


def make_config(settings: Settings) -> Config:
    return Config(
        load_rules(settings.rules, known_tags=None), load_targets(settings.apprise_config)
    )


def message(id_: int, at: int, type_: str = "HELP") -> Message:
    return Message(
        id=id_, messenger_id=DEVICE, messenger_name="Anna", unix_time=at, type=type_,
        latitude=46.5, longitude=7.9, battery="GOOD",
    )  # fmt: skip


def name_of(d: Delivery) -> str:
    """A delivery's target by name (`rescue`, `backup`, `both`, `sms`)."""
    return d.label.split("?")[0].rsplit("/", 1)[1]


class World:
    """A store, a fake clock and a processor; messages arrive as the watcher stores them."""

    def __init__(self, tmp_path: Path, store: Store, **settings: object) -> None:
        self.settings = make_settings(tmp_path, **settings)
        self.store = store
        self.clock = FakeClock(T0)
        self.processor = Processor(
            self.settings, make_config(self.settings), store, self.clock, ack_key=KEY
        )

    def arrive(self, *messages: Message) -> None:
        self.store.insert_messages(FEED, list(messages), self.clock.now(), initial=False)
        self.processor.process()

    def at(self, minutes: float) -> None:
        """Move the clock to T0 + minutes and run a cycle."""
        self.clock.t = T0 + minutes * 60
        self.processor.process()

    def incident(self) -> Incident:
        [inc] = [i for i in self.store.incidents() if i.is_open]
        return inc

    def deliveries(self, kind: Reason | None = None) -> list[Delivery]:
        return [d for d in self.store.pending_deliveries() if kind is None or d.kind == kind.value]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state" / "alerter.db")
    try:
        yield s
    finally:
        s.close()


# -- tokens -----------------------------------------------------------------------------


def test_a_token_names_its_incident_and_tag_and_is_url_safe() -> None:
    token = make_token(KEY, 42, "rescue")
    assert verify(KEY, token) == (42, "rescue")
    assert make_token(KEY, 42, "rescue") == token  # no randomness: one link per tag
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert verify(KEY, make_token(KEY, 7, "Rettung-Süd")) == (7, "Rettung-Süd")
    assert ack_url(PUBLIC_URL + "/", KEY, 42, "rescue") == f"{PUBLIC_URL}/ack/{token}"


def test_a_token_carries_a_mac_of_128_bits() -> None:
    token = make_token(KEY, 42, "rescue")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw.startswith(b"42:rescue")
    assert len(raw) - len(b"42:rescue") >= 16


def test_every_single_character_altered_is_refused() -> None:
    token = make_token(KEY, 42, "rescue")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, c in enumerate(token):
        for other in alphabet:
            if other != c:
                altered = token[:i] + other + token[i + 1 :]
                assert verify(KEY, altered) is None, (i, other)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-token", id="garbage"),
        pytest.param(base64.urlsafe_b64encode(b"42:rescue" + b"\0" * 16).decode(), id="zero-mac"),
        pytest.param(
            base64.urlsafe_b64encode(b"42:rescue" + os.urandom(16)).decode().rstrip("="),
            id="random-mac",
        ),
        pytest.param(make_token(KEY, 42, "rescue") + "=", id="padded"),
        pytest.param(make_token(KEY, 42, "rescue") + "A", id="longer"),
        pytest.param(make_token(KEY, 42, "rescue")[:-1], id="truncated"),
        pytest.param(make_token(KEY, 42, "rescue")[:20], id="half"),
        pytest.param("A" * 5000, id="huge"),
        pytest.param("éé" + make_token(KEY, 42, "rescue"), id="not-ascii"),
        pytest.param(
            next(
                t for i in range(100) if set(t := make_token(KEY, i, "rescue")) & set("-_")
            ).translate(str.maketrans("-_", "+/")),
            id="other-alphabet",
        ),
    ],
)
def test_forged_tokens_are_refused(token: str) -> None:
    assert verify(KEY, token) is None


def test_a_token_of_another_incident_or_tag_or_key_does_not_verify_as_this_one() -> None:
    mine, theirs = make_token(KEY, 42, "rescue"), make_token(KEY, 43, "rescue")
    assert verify(KEY, theirs) == (43, "rescue")  # valid, for the other incident only
    # Another incident's MAC on this incident's payload:
    mac = base64.urlsafe_b64decode(theirs + "=" * (-len(theirs) % 4))[-16:]
    spliced = base64.urlsafe_b64encode(b"42:rescue" + mac).decode().rstrip("=")
    assert verify(KEY, spliced) is None
    tag_swapped = base64.urlsafe_b64encode(
        b"42:rescue-backup" + base64.urlsafe_b64decode(mine + "=" * (-len(mine) % 4))[-16:]
    )
    assert verify(KEY, tag_swapped.decode().rstrip("=")) is None
    assert verify(bytes(32), mine) is None  # another key
    assert verify(KEY[:-1] + b"\xff", mine) is None


def test_a_token_needs_an_id_and_a_tag() -> None:
    with pytest.raises(ValueError):
        make_token(KEY, 1, "")
    with pytest.raises(ValueError):
        make_token(KEY, -1, "rescue")


# -- the key ----------------------------------------------------------------------------


def test_the_key_is_generated_once_0600_and_read_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = load_key(None, state)
    path = state / KEY_FILE
    assert len(key) == KEY_BYTES
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    inode = path.stat().st_ino
    assert load_key(None, state) == key  # a later start reads it back
    assert path.stat().st_ino == inode  # not rewritten
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILE]  # no temporary file left
    assert load_key(None, tmp_path / "other") != key


def test_processes_starting_together_end_up_with_one_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        keys.append(load_key(None, state))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8
    assert set(keys) == {(state / KEY_FILE).read_bytes()}
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILE]


def test_alerter_secret_key_is_used_instead_of_a_file(tmp_path: Path) -> None:
    secret = "correct-horse-battery-staple-42"
    key = load_key(SecretStr(secret), tmp_path / "state")
    assert key == secret.encode()
    assert not (tmp_path / "state").exists()
    with pytest.raises(ConfigError) as caught:
        load_key(SecretStr("short"), tmp_path / "state")
    [problem] = caught.value.problems
    assert problem.source == "ALERTER_SECRET_KEY"
    assert "short" not in problem.message.replace("too short", "")


def test_a_damaged_key_file_is_refused_without_showing_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / KEY_FILE).write_bytes(b"0123456789abcdef")  # 16 bytes: cut short
    with pytest.raises(StoreError) as caught:
        load_key(None, state)
    assert "damaged" in str(caught.value)
    assert "0123456789abcdef" not in str(caught.value)


def test_the_key_never_appears_in_logs_or_alerts(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = load_key(None, tmp_path / "state")
    w = World(tmp_path, store, public_url=PUBLIC_URL)
    w.processor.ack_key = key
    w.arrive(message(1, T0))
    w.at(25)
    w.processor.acknowledge(w.incident().id or 0, "Bob", "cli")
    spellings = [
        key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="), key.decode("latin-1"),
    ]  # fmt: skip
    texts = [r.getMessage() for r in caplog.records]
    texts += [f"{d.title}\n{d.body}\n{d.short_text}" for d in w.deliveries()]
    assert any("/ack/" in t for t in texts)
    for text in texts:
        for spelling in spellings:
            assert spelling not in text


# -- which incidents a token opens ------------------------------------------------------


def test_a_token_leads_to_its_incident_until_it_is_resolved(tmp_path: Path, store: Store) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    inc = w.incident()
    assert inc.id is not None
    token = make_token(KEY, inc.id, "rescue")

    assert incident_for_token(KEY, token, store) == (inc, "rescue")
    assert incident_for_token(KEY, token[:-1] + "A", store) is None
    assert incident_for_token(KEY, make_token(KEY, inc.id + 1, "rescue"), store) is None
    assert incident_for_token(bytes(32), token, store) is None

    w.processor.acknowledge(inc.id, "Bob", "web:rescue")
    found = incident_for_token(KEY, token, store)
    assert found is not None
    assert (found[0].state, found[0].acknowledged_by) == (IncidentState.ACKNOWLEDGED, "Bob")

    w.clock.advance(60)
    w.arrive(message(2, T0 + 60, "HELP-CANCEL"))
    assert incident_for_token(KEY, token, store) is None  # spent


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("  Bob  ", "Bob"),
        ("Anna\tMaria\n Müller", "Anna Maria Müller"),
        ("Bob\x00\x1b[31m\u200b\u202e", "Bob[31m"),  # control and invisible characters go
        ("Zoë", "Zoë"),
        ("x" * 100, "x" * NAME_MAX),
        ("", None),
        ("  \n\t ", None),
        ("\x00\u200b", None),
    ],
)
def test_names_are_cleaned_and_limited(raw: str, name: str | None) -> None:
    assert clean_name(raw) == name


# -- acknowledging ----------------------------------------------------------------------


def test_acknowledging_takes_the_incident_and_tells_everyone_it_reached_once(
    tmp_path: Path, store: Store
) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    w.at(20)  # escalated to rescue-backup (and a reminder to everyone)
    inc = w.incident()
    assert (inc.escalation, inc.id) == (1, 1)
    before = len(w.deliveries())
    w.clock.t = T0 + 21 * 60 + 30

    outcome = w.processor.acknowledge(1, "  Bob\n", "cli")

    assert outcome.status is AckStatus.ACKNOWLEDGED
    assert (outcome.by, outcome.at) == ("Bob", T0 + 21 * 60 + 30)
    taken = store.incident(1)
    assert taken is not None
    assert (taken.state, taken.acknowledged_by, taken.acknowledged_at, taken.acknowledged_via) == (
        IncidentState.ACKNOWLEDGED, "Bob", T0 + 21 * 60 + 30, "cli",
    )  # fmt: skip
    assert store.history(1)[-1] == EngineEvent(
        1, T0 + 21 * 60 + 30, Reason.ACKNOWLEDGED, None, notified=True
    )
    acks = w.deliveries(Reason.ACKNOWLEDGED)
    assert len(w.deliveries()) == before + len(acks)
    assert len({d.notification_id for d in acks}) == 1  # one notification
    # Everyone reached: the rule's tag and the escalation step's; each target once.
    assert sorted(name_of(d) for d in acks) == ["backup", "both", "rescue", "sms"]
    assert outcome.notified == 4
    title = "Acknowledged: Bob took the HELP of Anna at 08:21 UTC"
    assert {d.title for d in acks} == {title}
    assert all("Acknowledge:" not in d.body and "/ack/" not in d.short_text for d in acks)
    [sms] = [d for d in acks if name_of(d) == "sms"]
    assert sms.short_text.startswith("Acknowledged: Bob took the HELP of Anna at 08:21Z")
    assert acks[0].body.splitlines()[0].startswith("Acknowledged: Bob took charge at 08:21 UTC")


def test_acknowledging_again_changes_nothing_and_says_who_took_it(
    tmp_path: Path, store: Store
) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    w.clock.advance(120)
    w.processor.acknowledge(1, "Bob", "web:rescue")
    deliveries, history = w.deliveries(), store.history(1)
    w.clock.advance(60)

    outcome = w.processor.acknowledge(1, "Carol", "cli")

    assert outcome.status is AckStatus.ALREADY
    assert (outcome.by, outcome.at, outcome.notified) == ("Bob", T0 + 120, 0)
    assert w.deliveries() == deliveries
    assert store.history(1) == history
    taken = store.incident(1)
    assert taken is not None
    assert (taken.acknowledged_by, taken.acknowledged_via) == ("Bob", "web:rescue")


def test_a_resolved_or_unknown_incident_is_not_open(tmp_path: Path, store: Store) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    w.clock.advance(60)
    w.arrive(message(2, T0 + 60, "HELP-CANCEL"))
    deliveries = w.deliveries()

    resolved = w.processor.acknowledge(1, "Bob", "cli")
    unknown = w.processor.acknowledge(99, "Bob", "cli")

    assert resolved.status is AckStatus.NOT_OPEN
    assert resolved.incident is not None
    assert resolved.incident.state is IncidentState.RESOLVED
    assert (unknown.status, unknown.incident) == (AckStatus.NOT_OPEN, None)
    assert w.deliveries() == deliveries
    assert [e.reason for e in store.history(1)] == [Reason.OPENED, Reason.RESOLVED]


def test_a_name_is_required(tmp_path: Path, store: Store) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    with pytest.raises(ValueError):
        w.processor.acknowledge(1, " \n\u200b ", "cli")
    assert w.incident().state is IncidentState.OPEN
    long = w.processor.acknowledge(1, "B" * 200, "cli")
    assert long.by == "B" * NAME_MAX


def test_an_acknowledged_incident_gets_no_reminder_or_escalation_but_hears_its_end(
    tmp_path: Path, store: Store
) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    w.at(5)
    w.processor.acknowledge(1, "Bob", "cli")
    count = len(w.deliveries())
    for minute in range(6, 600, 7):
        w.at(minute)
    assert len(w.deliveries()) == count  # nothing more: no reminder, no escalation
    assert w.incident().escalation == 0

    w.clock.t = T0 + 600 * 60
    w.arrive(message(2, T0 + 600 * 60, "HELP-CANCEL"))
    [cancel] = {d.notification_id: d for d in w.deliveries(Reason.RESOLVED)}.values()
    assert cancel.title == "HELP cancelled: Anna (Club)"
    assert sorted(name_of(d) for d in w.deliveries(Reason.RESOLVED)) == ["both", "rescue", "sms"]


def test_an_acknowledgement_is_written_only_while_the_incident_is_open(
    tmp_path: Path, store: Store
) -> None:
    """Another process (the CLI beside the service) may take or resolve it meanwhile."""
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    stale = w.incident()
    w.processor.acknowledge(1, "Bob", "cli")
    history = store.history(1)

    # An acknowledgement decided on a snapshot read before Bob took it: nothing written.
    carol = dataclasses.replace(
        stale, state=IncidentState.ACKNOWLEDGED, acknowledged_by="Carol", acknowledged_at=T0 + 1
    )
    event = EngineEvent(1, T0 + 1, Reason.ACKNOWLEDGED, None, notified=True)
    assert not store.commit_evaluation(
        processed=(), incidents=(), events=[event], outgoing=[], at=T0 + 1, acknowledge=carol
    )
    assert store.history(1) == history
    # The engine's decision on an older snapshot (still open) does not undo the acknowledgement.
    store.commit_evaluation(processed=(), incidents=[stale], events=[], outgoing=[], at=T0 + 2)
    taken = store.incident(1)
    assert taken is not None
    assert (taken.state, taken.acknowledged_by) == (IncidentState.ACKNOWLEDGED, "Bob")


def test_an_incident_whose_rule_is_gone_is_taken_with_nobody_to_tell(
    tmp_path: Path, store: Store
) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    other = RULES.replace("name: help\n", "name: sos\n").replace("resolves: help", "resolves: sos")
    write(tmp_path / "rules.yml", other)
    w.processor.use(make_config(w.settings))
    count = len(w.deliveries())

    outcome = w.processor.acknowledge(1, "Bob", "cli")

    assert (outcome.status, outcome.notified) == (AckStatus.ACKNOWLEDGED, 0)
    assert len(w.deliveries()) == count
    [*_, event] = store.history(1)
    assert (event.reason, event.notified) == (Reason.ACKNOWLEDGED, False)


# -- links in alerts --------------------------------------------------------------------


def _link(d: Delivery) -> str | None:
    lines = [x for x in d.body.splitlines() if x.startswith("Acknowledge: ")]
    return lines[0].removeprefix("Acknowledge: ") if lines else None


def test_without_public_url_alerts_carry_no_link(tmp_path: Path, store: Store) -> None:
    w = World(tmp_path, store)
    w.arrive(message(1, T0))
    w.at(20)
    assert w.deliveries()
    for d in w.deliveries():
        assert _link(d) is None
        assert "/ack/" not in d.short_text
    # One notification per decision, as before.
    assert len({d.notification_id for d in w.deliveries(Reason.OPENED)}) == 1


def test_alerts_of_an_open_incident_carry_the_link_of_each_targets_tag(
    tmp_path: Path, store: Store
) -> None:
    w = World(tmp_path, store, public_url=PUBLIC_URL + "/")
    w.arrive(message(1, T0))
    w.at(20)  # escalated to rescue-backup, and a reminder to everyone reached

    for kind, names, tags in [
        (Reason.OPENED, ["both", "rescue", "sms"], ("rescue",)),
        (Reason.ESCALATED, ["backup", "both"], ("rescue-backup",)),
        (Reason.REMINDED, ["backup", "both", "rescue", "sms"], ("rescue", "rescue-backup")),
    ]:
        ds = w.deliveries(kind)
        assert sorted(name_of(d) for d in ds) == names  # each target exactly once
        for d in ds:
            link = _link(d)
            assert link is not None
            assert link.startswith(f"{PUBLIC_URL}/ack/")
            # The token of the first of the decision's tags the target carries.
            carries = {"backup": {"rescue-backup"}, "both": {"rescue", "rescue-backup"}}.get(
                name_of(d), {"rescue"}
            )
            tag = next(t for t in tags if t in carries)
            assert verify(KEY, link.rsplit("/", 1)[1]) == (1, tag)
    reminder = w.deliveries(Reason.REMINDED)
    assert len({d.notification_id for d in reminder}) == 2  # one per tag group


def test_the_sms_form_carries_the_link_within_two_segments(tmp_path: Path, store: Store) -> None:
    w = World(tmp_path, store, public_url=PUBLIC_URL)
    long_text = "Twisted ankle below the pass, waiting at the hut, " * 8
    help_ = Message(
        id=1, messenger_id=DEVICE, messenger_name="Alexandra " * 6, unix_time=T0, type="HELP",
        latitude=46.5, longitude=7.9, battery="LOW", content=long_text,
    )  # fmt: skip
    w.arrive(help_)
    [sms] = [d for d in w.deliveries() if name_of(d) == "sms"]
    link = _link(sms)
    assert link is not None
    assert len(sms.short_text) <= SMS_TWO
    assert link in sms.short_text.split()  # whole, never cut


def test_alerts_of_an_acknowledged_or_resolved_incident_carry_no_link(
    tmp_path: Path, store: Store
) -> None:
    w = World(tmp_path, store, public_url=PUBLIC_URL)
    w.arrive(message(1, T0))
    w.clock.advance(60)
    w.processor.acknowledge(1, "Bob", "web:rescue")
    w.clock.t = T0 + 15 * 60
    w.arrive(message(2, T0 + 15 * 60))  # a repeat: a HELP update of the taken incident
    w.clock.t = T0 + 16 * 60
    w.arrive(message(3, T0 + 16 * 60, "HELP-CANCEL"))

    assert [_link(d) is not None for d in w.deliveries(Reason.OPENED)] == [True] * 3
    for kind in (Reason.ACKNOWLEDGED, Reason.UPDATED, Reason.RESOLVED):
        ds = w.deliveries(kind)
        assert ds, kind
        assert all(_link(d) is None and "/ack/" not in d.short_text for d in ds), kind
        assert len({d.notification_id for d in ds}) == 1, kind


# -- the CLI ----------------------------------------------------------------------------

FEED_ID = "0onlCLItestFEEDid000000000000001"
FEED_PASSWORD = "feed-pass-do-not-print"
SECRET_KEY = "a-secret-key-that-must-never-show"


@pytest.fixture
def _logging_restored() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("", "apprise", "urllib3")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _logging_restored: None) -> Path:
    """A working directory, settings in the environment, the shipped rules, a state DB
    with Anna's HELP open as incident #1 (decided by the real processor)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "ALERTER_FEEDS", json.dumps([{"id": FEED_ID, "password": FEED_PASSWORD, "name": "Club"}])
    )
    monkeypatch.setenv("ALERTER_RULES", str(ROOT / "rules"))
    monkeypatch.setenv("ALERTER_APPRISE_CONFIG", str(tmp_path / "apprise.yml"))
    monkeypatch.setenv("ALERTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ALERTER_SECRET_KEY", SECRET_KEY)
    (tmp_path / "apprise.yml").write_text(
        "urls:\n"
        "  - json://127.0.0.1:9/rescue:\n      tag: rescue\n"
        "  - json://127.0.0.1:9/backup:\n      tag: rescue-backup\n"
        "  - json://127.0.0.1:9/admin:\n      tag: admin\n"
    )
    settings = load_settings(env_file=None)
    store = Store.open(settings.database)
    try:
        store.ensure_feed(FEED_ID, T0)
        store.insert_messages(
            FEED_ID, [Message(1, "0-1", "Anna", T0, "HELP", 46.5, 7.9)], T0, initial=False
        )
        Processor(settings, make_config(settings), store, FakeClock(T0)).process()
    finally:
        store.close()
    return tmp_path


def test_incidents_lists_open_incidents(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["incidents"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()
    assert header.split() == ["ID", "RULE", "DEVICE", "SINCE", "STATE"]
    assert row.split()[:4] == ["#1", "help", "Anna", "(0-1)"]
    assert "2027-01-15 08:00 UTC" in row
    assert row.rstrip().endswith("open")


def test_ack_takes_the_incident_beside_a_running_service(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = Store.open(env / "state" / "alerter.db")  # `alerter run`'s connection, held open
    try:
        assert main(["ack", "1", "--by", " Bob "]) == 0
        out, err = capsys.readouterr()
        assert "incident #1 (help) acknowledged by Bob at " in out
        assert "1 target will be told" in out  # rescue: the HELP was not escalated yet

        taken = service.incident(1)  # the service's connection sees it (WAL)
        assert taken is not None
        assert (taken.state, taken.acknowledged_by, taken.acknowledged_via) == (
            IncidentState.ACKNOWLEDGED, "Bob", "cli",
        )  # fmt: skip
        [ack] = [d for d in service.pending_deliveries() if d.kind == "acknowledged"]
        assert ack.title.startswith("Acknowledged: Bob took the HELP of Anna at ")
        assert name_of(ack) == "rescue"
    finally:
        service.close()

    assert main(["incidents"]) == 0
    listed = capsys.readouterr().out
    assert "acknowledged by Bob at " in listed

    assert main(["ack", "1", "--by", "Carol"]) == 0  # idempotent
    again = capsys.readouterr().out
    assert "already acknowledged by Bob" in again

    for text in (out, err, listed, again):
        for secret in (SECRET_KEY, FEED_PASSWORD, FEED_ID):
            assert secret not in text


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        pytest.param(["ack", "99", "--by", "Bob"], 1, "not open (no such incident)", id="unknown"),
        pytest.param(["ack", "1", "--by", "  "], 2, "--by needs a name", id="no-name"),
    ],
)
def test_ack_refusals(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, said: str
) -> None:
    assert main(args) == code
    assert said in capsys.readouterr().err
    store = Store.open(env / "state" / "alerter.db")
    try:
        inc = store.incident(1)
        assert inc is not None
        assert inc.state is IncidentState.OPEN
    finally:
        store.close()


def test_ack_of_a_resolved_incident_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(env_file=None)
    store = Store.open(settings.database)
    try:
        store.insert_messages(
            FEED_ID, [Message(2, "0-1", "Anna", T0 + 60, "HELP-CANCEL")], T0 + 60, initial=False
        )
        Processor(settings, make_config(settings), store, FakeClock(T0 + 60)).process()
    finally:
        store.close()

    assert main(["ack", "1", "--by", "Bob"]) == 1
    assert "not open (it was resolved)" in capsys.readouterr().err
    assert main(["incidents"]) == 0
    assert capsys.readouterr().out.strip() == "no open incidents"


def test_incidents_without_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALERTER_STATE_DIR", str(tmp_path / "nothing"))
    assert main(["incidents"]) == 1
    assert "no state yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("subject", "zone", "title", "short"),
    [
        pytest.param(
            "HELP", "Europe/Zurich",
            "Acknowledged: Bob took the HELP of Anna at 08:21 UTC (09:21 CET)",
            "Acknowledged: Bob took the HELP of Anna at 08:21Z", id="help",
        ),
        pytest.param(
            "Silent", "UTC", "Acknowledged: Bob took the Silent of Anna at 08:21 UTC",
            "Acknowledged: Bob took the Silent of Anna at 08:21Z", id="silent",
        ),
        pytest.param(
            "CUSTOM message", "UTC",
            "Acknowledged: Bob took the CUSTOM message of Anna at 08:21 UTC",
            "Acknowledged: Bob took the CUSTOM message of Anna at 08:21Z", id="event",
        ),
    ],
)  # fmt: skip
def test_the_acknowledged_title_names_who_took_what_of_whom_and_when(
    subject: str, zone: str, title: str, short: str
) -> None:
    taken_at = T0 + 21 * 60
    rec = Received(message(1, T0), FEED, T0 + 30)
    inc = Incident(
        device_id=DEVICE, rule="r", state=IncidentState.ACKNOWLEDGED, started_at=T0,
        opened_at=T0, updated_at=T0, acknowledged_by="Bob", acknowledged_at=taken_at, id=1,
    )  # fmt: skip
    kind = next((k for k in Subject if k.value == subject), Subject.EVENT)
    d = Decision(
        reason=Reason.ACKNOWLEDGED, incident=inc, rule="r", subject=subject, kind=kind,
        severity=Severity.CRITICAL, device=Device(DEVICE, "Anna", FEED, last=rec),
        feed_name="Club", message=rec, tags=("rescue",), first_message=rec,
    )  # fmt: skip
    rendered = render(d, taken_at + 5, ZoneInfo(zone), ack_url=f"{PUBLIC_URL}/ack/x")
    assert rendered.title == title
    assert rendered.short.startswith(short)
    assert "/ack/" not in rendered.body + rendered.short
