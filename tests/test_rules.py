"""Rule files: the schema's behaviour and the loader's file:line problems."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alerter.errors import ConfigError, Problem
from alerter.models import Severity
from alerter.rules.loader import load_rules
from alerter.rules.schema import Rule, RuleSet, SilentFor, Trigger

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.yml"
KNOWN_TAGS = {"rescue", "rescue-backup", "admin"}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(
    path: Path, known_tags: set[str] | None = None, min_interval: float = 0.0
) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_rules(path, known_tags, min_interval=min_interval)
    return caught.value.problems


def rule(**fields: Any) -> Rule:
    return Rule.model_validate({"name": "r", "when": {"type": ["HELP"]}, **fields})


# --- the shipped default file ----------------------------------------------------------


def test_default_rules_load() -> None:
    rules = load_rules(DEFAULT_RULES, KNOWN_TAGS)

    assert [r.name for r in rules.rules] == [
        "help",
        "help-cancel",
        "stale-track",
        "stop",
        "unknown-type",
        "low-battery",
    ]
    assert set(rules.origins) == set(rules.by_name)
    assert all(o.startswith(f"{DEFAULT_RULES}:") for o in rules.origins.values())
    tags = {t for r in rules.rules for t in (*r.notify, *(t for e in r.escalate for t in e.notify))}
    assert tags == {"rescue", "rescue-backup"}


def test_default_help() -> None:
    help_ = load_rules(DEFAULT_RULES).by_name["help"]

    assert help_.when.trigger is Trigger.TYPE
    assert help_.when.types == ("HELP",)
    assert help_.notify == ("rescue",)
    assert help_.severity is Severity.CRITICAL
    assert help_.repeat == 15 * 60
    assert help_.updates == 10 * 60
    assert [(e.after, e.notify) for e in help_.escalate] == [(20 * 60, ("rescue-backup",))]
    assert help_.opens_incidents


def test_default_resolvers() -> None:
    rules = load_rules(DEFAULT_RULES)
    cancel, stop = rules.by_name["help-cancel"], rules.by_name["stop"]

    assert cancel.when.types == ("HELP-CANCEL",)
    assert cancel.resolves == ("help",)
    assert cancel.notify == ("rescue",)
    assert not cancel.opens_incidents
    assert stop.when.types == ("STOP", "POWER-OFF")
    assert stop.resolves == ("stale-track",)
    assert stop.notify == ()
    assert rules.resolvers_of("help") == (cancel,)
    assert rules.resolvers_of("stale-track") == (stop,)
    assert rules.resolvers_of("low-battery") == ()


def test_default_conditions_and_unknown() -> None:
    rules = load_rules(DEFAULT_RULES)
    stale, unknown, battery = (
        rules.by_name["stale-track"],
        rules.by_name["unknown-type"],
        rules.by_name["low-battery"],
    )

    assert stale.when.silent_for == SilentFor(times_usual_gap=3, at_least=30 * 60)
    assert stale.when.tracking_types == ("TRACK", "EXTREME-TRACK", "UNLIMITED-TRACK", "NEWMOVEMENT")
    assert stale.notify == ("rescue",)
    assert stale.severity is Severity.WARNING
    assert stale.repeat is None
    assert stale.when.trigger is Trigger.SILENCE

    assert unknown.when.trigger is Trigger.UNKNOWN
    assert unknown.notify == ("rescue",)
    assert unknown.severity is Severity.CRITICAL
    assert unknown.repeat == 15 * 60

    assert battery.when.battery == "LOW"
    assert battery.notify == ("rescue",)
    assert battery.severity is Severity.INFO
    assert battery.repeat is None
    assert battery.when.trigger is Trigger.BATTERY


# --- folders ---------------------------------------------------------------------------


def test_folder_merges_files_in_name_order(tmp_path: Path) -> None:
    # Written in the "wrong" order: the loader sorts by name, not by creation.
    second = write(
        tmp_path,
        "20-cancel.yaml",
        """
        rules:
          - name: help-cancel
            when: {type: HELP-CANCEL}
            resolves: help
        """,
    )
    first = write(
        tmp_path,
        "10-help.yml",
        """
        # comment first, so the rules do not start on line 1
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescue]

          - name: battery
            when: {battery: low}
        """,
    )
    write(tmp_path, "README.txt", "not a rule file")

    rules = load_rules(tmp_path, KNOWN_TAGS)

    assert [r.name for r in rules.rules] == ["help", "battery", "help-cancel"]
    assert rules.origins == {
        "help": f"{first}:3",
        "battery": f"{first}:7",
        "help-cancel": f"{second}:2",
    }


def test_folder_problems_name_each_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", "rules:\n  - name: x\n    when: {type: HELP}\n    sev: info\n")
    b = write(tmp_path, "b.yml", "rules:\n  - name: x\n    when: {type: HELP}\n")

    problems = problems_of(tmp_path)

    assert [(p.source, p.line) for p in problems] == [(str(a), 4)]  # the bad x is not counted
    b.write_text("rules:\n  - name: y\n    when: {type: HELP}\n    resolves: x\n")
    assert [(p.source, p.line) for p in problems_of(tmp_path)] == [(str(a), 4)]


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("rules: []\n")

    [problem] = problems_of(tmp_path)

    assert problem.source == str(tmp_path)
    assert "no rule files" in problem.message


def test_missing_path(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "nope.yml")

    assert problem.source == str(tmp_path / "nope.yml")
    assert "no such" in problem.message


# --- bad files -------------------------------------------------------------------------

BAD_FILES = [
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notfy: [rescue]
        """,
        None,
        4,
        "rules[0] 'help': unknown key 'notfy' (allowed: name, when, notify, severity, repeat, "
        "updates, escalate, resolves)",
        id="unknown-key-in-rule",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when:
              typ: HELP
        """,
        None,
        4,
        "when: unknown key 'typ' (allowed: type, device, feed, battery, silent_for, tracking)",
        id="unknown-key-in-when",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            escalate:
              - after: 20m
                notify: [rescue]
                wait: 5m
        """,
        None,
        7,
        "escalate[0]: unknown key 'wait' (allowed: after, notify)",
        id="unknown-key-in-escalation",
    ),
    pytest.param(
        """
        rules:
          - name: stale
            when:
              silent_for: {times_usual_gap: 3, atleast: 30m}
        """,
        None,
        4,
        "when.silent_for: unknown key 'atleast' (allowed: times_usual_gap, at_least)",
        id="unknown-key-in-silent-for",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: 10 minutes
        """,
        None,
        4,
        "rules[0] 'help': repeat: expected a duration like 90s, 15m or 2h, got '10 minutes'",
        id="bad-duration",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            escalate:
              - after: soon
                notify: [rescue]
        """,
        None,
        5,
        "escalate[0].after: expected a duration like 90s, 15m or 2h, got 'soon'",
        id="bad-duration-in-escalation",
    ),
    pytest.param(
        """
        rules:
          - name: stale
            when:
              silent_for: an hour
        """,
        None,
        4,
        "when.silent_for: expected a duration like 90s, 15m or 2h, got 'an hour'",
        id="bad-silent-for",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
          - name: low
            when: {battery: LOW}
            severity: urgent
        """,
        None,
        6,
        "rules[1] 'low': severity: must be one of critical, warning, info, got 'urgent'",
        id="bad-severity",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: {rescue: yes}
        """,
        None,
        4,
        "notify: expected a list of tags like [rescue], got a mapping",
        id="notify-not-a-list",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notify:
              - rescue
              - 5
        """,
        None,
        6,
        "notify[1]: expected a tag like rescue, got 5",
        id="notify-item-not-a-tag",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
          - when: {type: STOP}
            notify: [rescue]
        """,
        None,
        4,
        "rules[1]: missing key 'name'",
        id="missing-name",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
          - name: stop
            notify: [rescue]
        """,
        None,
        4,
        "rules[1] 'stop': missing key 'when'",
        id="missing-when",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            escalate:
              - notify: [rescue]
        """,
        None,
        5,
        "escalate[0]: missing key 'after'",
        id="missing-key-in-escalation",
    ),
    pytest.param(
        """
        rules:
          - name: mixed
            when:
              type: HELP
              battery: LOW
        """,
        None,
        3,
        "when: needs exactly one of `type`, `battery` or `silent_for` (found type, battery)",
        id="two-triggers",
    ),
    pytest.param(
        """
        rules:
          - name: nothing
            when: {device: "Anna*"}
        """,
        None,
        3,
        "when: needs exactly one of `type`, `battery` or `silent_for`",
        id="no-trigger",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when:
              type: HELP
              tracking: [TRACK]
        """,
        None,
        3,
        "`tracking` only goes with `silent_for`",
        id="tracking-without-silent-for",
    ),
    pytest.param(
        """
        rules:
          - name: odd
            when:
              type: [unknown]
        """,
        None,
        4,
        "when.type: `unknown` stands alone: write `type: unknown`",
        id="unknown-in-a-list",
    ),
    pytest.param(
        """
        rules:
          - name: odd
            when:
              type: [HELP, 5]
        """,
        None,
        4,
        "when.type[1]: expected a message type like HELP, got 5",
        id="type-item-not-a-string",
    ),
    pytest.param(
        """
        rules:
          - name: odd
            when: {type: {HELP: true}}
        """,
        None,
        3,
        "when.type: expected a message type, a list of them",
        id="type-a-mapping",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: 10m
          - name: help
            when: {type: HELP-CANCEL}
        """,
        None,
        5,
        "rules[1] 'help': name: another rule is already named 'help' ({path}:2)",
        id="duplicate-rule-name",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescue]
            severity: critical
            notify: [admin]
        """,
        None,
        6,
        "duplicate key 'notify' (first at line 4)",
        id="duplicate-key",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
          - name: help-cancel
            when: {type: HELP-CANCEL}
            resolves: hepl
        """,
        None,
        6,
        "resolves: no rule is named 'hepl' (rules: help)",
        id="resolves-nothing",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
          - name: cancel
            when: {type: HELP-CANCEL}
            resolves: [help, cancel]
        """,
        None,
        6,
        "resolves: a rule cannot resolve itself",
        id="resolves-itself",
    ),
    pytest.param(
        """
        rules:
          - name: stop
            when: {type: STOP}
            resolves: help
          - name: help
            when: {type: HELP}
            resolves: stop
        """,
        None,
        4,
        "resolves: 'help' itself has `resolves`",
        id="resolves-a-resolver",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            resolves: help
            repeat: 5m
        """,
        None,
        2,
        "a rule with `resolves` opens no incident of its own",
        id="resolver-with-repeat",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescu]
        """,
        {"admin", "rescue"},
        4,
        "notify: tag 'rescu' is not carried by any Apprise URL (known: admin, rescue)",
        id="unknown-tag",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescue]
            escalate:
              - after: 1h
                notify: [admin]
              - after: 20m
                notify:
                  - admin
                  - backup
        """,
        {"admin", "rescue"},
        11,
        "escalate[1].notify: tag 'backup' is not carried by any Apprise URL",
        id="unknown-tag-in-escalation",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: [HELP}
        """,
        None,
        3,
        "invalid YAML: expected ',' or ']'",
        id="yaml-syntax-error",
    ),
    pytest.param(
        "rules:\n  - name: help\n\twhen: {type: HELP}\n",
        None,
        3,
        "indent with spaces, not tabs",
        id="yaml-tab",
    ),
    pytest.param("", None, 1, "the file is empty", id="empty-file"),
    pytest.param("# only a comment\n", None, 1, "the file is empty", id="comments-only"),
    pytest.param(
        """
        - name: help
          when: {type: HELP}
        """,
        None,
        1,
        "expected a mapping with a `rules:` list at the top, got a list",
        id="top-level-list",
    ),
    pytest.param(
        """
        rules: []
        rule: []
        """,
        None,
        2,
        "unknown key 'rule' (allowed: rules)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        # rules below
        rules:
        """,
        None,
        2,
        "rules: expected a list of rules",
        id="rules-empty",
    ),
    pytest.param(
        """
        rules:
          name: help
          when: {type: HELP}
        """,
        None,
        1,
        "rules: expected a list of rules (each starting `- name: ...`), got a mapping",
        id="rules-a-mapping",
    ),
    pytest.param(
        """
        rules:
          - help
        """,
        None,
        2,
        "rules[0]: expected a rule (a mapping with name, when, notify, ...), got 'help'",
        id="rule-a-string",
    ),
    pytest.param(
        "rules: !!python/object/apply:os.system [echo]\n",
        None,
        1,
        "invalid YAML: could not determine a constructor",
        id="unsafe-tag",
    ),
]


@pytest.mark.parametrize(("text", "known_tags", "line", "phrase"), BAD_FILES)
def test_bad_file(
    tmp_path: Path, text: str, known_tags: set[str] | None, line: int, phrase: str
) -> None:
    path = write(tmp_path, "rules.yml", text)

    problems = problems_of(path, known_tags)

    rendered = [str(p) for p in problems]
    expected = phrase.format(path=path)
    assert any(
        p.source == str(path) and p.line == line and expected in p.message for p in problems
    ), rendered
    assert any(r.startswith(f"{path}:{line}: ") for r in rendered)
    for r in rendered:  # nothing of pydantic's own wording leaks to admins
        assert "pydantic" not in r
        assert "Value error" not in r
        assert "input_value" not in r


# --- what a rule file may not do: freeze or silence the service -------------------------
# Each case: the file, the poll interval given to the loader, and every problem exactly.

POLL = 150.0
SLOW = "it would remind faster than the service can see anything"
SILENT = "a device would count as silent before the service has polled it again"
ESCALATE = (
    "it would escalate before the service can see a cancel; to tell these tags at once, "
    "add them to `notify`"
)
UNLISTED = (
    "is not a message type SPOT is known to send: fine if SPOT adds it, but check the "
    "spelling (and `type: unknown` no longer catches it)"
)
CRITICAL = "a critical rule must notify someone: list a tag in `notify` (or add an `escalate` step)"

REFUSED = [
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescue]
            repeat: 0s
        """,
        POLL,
        [(5, f"rules[0] 'help': repeat: 0s is below the poll interval (150s): {SLOW}")],
        id="repeat-0s",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: 0
        """,
        POLL,
        [(4, f"rules[0] 'help': repeat: 0s is below the poll interval (150s): {SLOW}")],
        id="repeat-bare-0",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: 1ms
        """,
        POLL,
        [(4, f"rules[0] 'help': repeat: 1ms is below the poll interval (150s): {SLOW}")],
        id="repeat-1ms",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: 2m
        """,
        POLL,
        [(4, f"rules[0] 'help': repeat: 2m is below the poll interval (150s): {SLOW}")],
        id="repeat-below-interval",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: 0s
        """,
        0.0,
        [(4, f"rules[0] 'help': repeat: 0s is below the minimum (1s): {SLOW}")],
        id="repeat-0s-without-settings",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            updates: 10s
        """,
        POLL,
        [
            (
                4,
                "rules[0] 'help': updates: 10s is below the poll interval (150s): it would "
                "send updates faster than the service can see anything",
            )
        ],
        id="updates-below-interval",
    ),
    pytest.param(  # the model sorts steps by `after`: the problem is where it is written
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescue]
            escalate:
              - after: 1h
                notify: [admin]
              - after: 0s
                notify: [rescue-backup]
        """,
        POLL,
        [
            (
                8,
                "rules[0] 'help': escalate[1].after: 0s is below the poll interval (150s): "
                + ESCALATE,
            )
        ],
        id="escalate-after-0s",
    ),
    pytest.param(  # today 0 disables the rule without a word
        """
        rules:
          - name: stale
            when:
              silent_for: 0s
        """,
        POLL,
        [(4, f"rules[0] 'stale': when.silent_for: 0s is below the poll interval (150s): {SILENT}")],
        id="silent-for-0s",
    ),
    pytest.param(
        """
        rules:
          - name: stale
            when:
              silent_for:
                times_usual_gap: 3
                at_least: 1m
        """,
        POLL,
        [
            (
                6,
                "rules[0] 'stale': when.silent_for.at_least: 1m is below the poll interval "
                f"(150s): {SILENT}",
            )
        ],
        id="silent-for-at-least",
    ),
    pytest.param(
        """
        rules:
          - name: stale
            when:
              silent_for: {times_usual_gap: .inf}
        """,
        POLL,
        [
            (
                4,
                "rules[0] 'stale': when.silent_for.times_usual_gap: must be a finite number, "
                "got .inf",
            )
        ],
        id="silent-for-infinite-gap",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when:
              type: [HELP, HLEP]
        """,
        POLL,
        [
            (
                4,
                "rules[0] 'help': when.type[1]: 'HLEP' is not a SPOT message type; did you "
                "mean HELP?",
            )
        ],
        id="type-near-miss",
    ),
    pytest.param(
        """
        rules:
          - name: cancel
            when:
              type: HELP-CANCLE
        """,
        POLL,
        [
            (
                4,
                "rules[0] 'cancel': when.type: 'HELP-CANCLE' is not a SPOT message type; did you "
                "mean HELP-CANCEL?",
            )
        ],
        id="type-near-miss-alone",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when:
              type: ""
        """,
        POLL,
        [(4, "rules[0] 'help': when.type: a message type cannot be empty")],
        id="type-empty",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when:
              type:
                - "HELP\u200b"
                - "HELP\u00a0CANCEL"
                - "OK\\x07"  # a YAML escape: the control character itself may not be in a file
        """,
        POLL,
        [
            (
                5,
                "rules[0] 'help': when.type[0]: 'HELP\\u200b' contains U+200B (ZERO WIDTH SPACE), "
                "which no message type has; did you mean HELP?",
            ),
            (
                6,
                "rules[0] 'help': when.type[1]: 'HELP\\xa0CANCEL' contains U+00A0 (NO-BREAK "
                "SPACE), which no message type has; did you mean HELP-CANCEL?",
            ),
            (
                7,
                "rules[0] 'help': when.type[2]: 'OK\\x07' contains U+0007 (a control "
                "character), which no message type has; did you mean OK?",
            ),
        ],
        id="type-invisible-characters",
    ),
    pytest.param(
        """
        rules:
          - name: stale
            when:
              silent_for: 1h
              tracking: [TRACK, TRAKC]
        """,
        POLL,
        [
            (
                5,
                "rules[0] 'stale': when.tracking[1]: 'TRAKC' is not a SPOT message type; did "
                "you mean TRACK?",
            )
        ],
        id="tracking-near-miss",
    ),
    pytest.param(  # today it silences the rule: no device ever counts as tracking
        """
        rules:
          - name: stale
            when:
              silent_for: 1h
              tracking: []
        """,
        POLL,
        [
            (
                5,
                "rules[0] 'stale': when.tracking: list at least one message type: with none, "
                "no device is tracking",
            )
        ],
        id="tracking-empty",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            severity: critical
            notify: []
        """,
        POLL,
        [(5, f"rules[0] 'help': notify: {CRITICAL}")],
        id="critical-notifies-nobody",
    ),
    pytest.param(
        """
        rules:
          - name: help
            when: {type: HELP}
            severity: critical
        """,
        POLL,
        [(4, f"rules[0] 'help': severity: {CRITICAL}")],
        id="critical-without-notify",
    ),
    pytest.param(  # 1000 levels would exhaust Python's stack (RecursionError)
        "rules:\n  - name: help\n    when: {type: HELP}\n    x: " + "[" * 1000 + "]" * 1000,
        POLL,
        [(4, "nested more than 50 levels deep; a rule needs no more than 6")],
        id="nested-1000-deep",
    ),
    pytest.param(  # int() refuses more than 4300 digits (ValueError)
        "rules:\n  - name: help\n    when: {type: HELP}\n    repeat: " + "9" * 5000 + "\n",
        POLL,
        [(4, "a number with 5000 digits is too long to read")],
        id="int-5000-digits",
    ),
    pytest.param(  # float() cannot hold it (OverflowError)
        "rules:\n  - name: help\n    when: {type: HELP}\n    repeat: " + "9" * 400 + "\n",
        POLL,
        [
            (
                4,
                "rules[0] 'help': repeat: expected a duration like 90s, 15m or 2h, got a number "
                "with 400 digits",
            )
        ],
        id="duration-400-digits",
    ),
    pytest.param(
        "rules:\n  - name: help\n    repeat: !!timestamp 2026-13-45\n",
        POLL,
        [(3, "cannot read 2026-13-45 as a timestamp: month must be in 1..12")],
        id="impossible-date",
    ),
    pytest.param(
        "# " + "x" * 256 * 1024 + "\nrules: []\n",
        POLL,
        [(None, "larger than 256 KiB, the most a rule file may be (is it the right file?)")],
        id="huge-file",
    ),
]


@pytest.mark.parametrize(("text", "min_interval", "expected"), REFUSED)
def test_refused(
    tmp_path: Path,
    text: str,
    min_interval: float,
    expected: list[tuple[int | None, str]],
) -> None:
    path = write(tmp_path, "rules.yml", text)

    with pytest.raises(ConfigError) as caught:
        load_rules(path, min_interval=min_interval)

    assert [str(p) for p in caught.value.problems] == [
        str(Problem(str(path), line, message)) for line, message in expected
    ]


@pytest.mark.parametrize(
    ("accepted", "seconds", "refused"),
    [
        pytest.param("150s", 150.0, "149s", id="the-interval-itself"),
        pytest.param("2.5m", 150.0, "2.4m", id="the-interval-in-minutes"),
        pytest.param("off", None, "0s", id="off-but-not-0"),
        pytest.param("'off'", None, "0", id="quoted-off-but-not-bare-0"),
    ],
)
def test_the_poll_interval_or_off_is_where_refusal_stops(
    tmp_path: Path, accepted: str, seconds: float | None, refused: str
) -> None:
    rules = """
        rules:
          - name: help
            when: {{type: HELP}}
            repeat: {value}
            updates: {value}
        """
    path = write(tmp_path, "rules.yml", rules.format(value=accepted))

    help_ = load_rules(path, min_interval=POLL).by_name["help"]

    assert help_.repeat == help_.updates == seconds
    write(tmp_path, "rules.yml", rules.format(value=refused))
    assert [
        (p.line, p.message.split(": ", 2)[1]) for p in problems_of(path, min_interval=POLL)
    ] == [
        (4, "repeat"),
        (5, "updates"),
    ]


def test_default_rules_keep_to_spots_poll_interval() -> None:
    rules = load_rules(DEFAULT_RULES, KNOWN_TAGS, min_interval=POLL)

    assert len(rules.rules) == 6
    assert rules.warnings == ()


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        pytest.param("{type: [HELP, SOS]}", [(3, "when.type[1]: 'SOS'")], id="type"),
        pytest.param('{type: "911"}', [(3, "when.type: '911'")], id="type-alone"),
        pytest.param(
            "{silent_for: 1h, tracking: [TRACK, MOVING]}",
            [(3, "when.tracking[1]: 'MOVING'")],
            id="tracking",
        ),
    ],
)
def test_a_type_spot_is_not_known_to_send_is_a_warning(
    tmp_path: Path, when: str, expected: list[tuple[int, str]]
) -> None:
    path = write(
        tmp_path,
        "rules.yml",
        f"""
        rules:
          - name: odd
            when: {when}
            notify: [rescue]
        """,
    )

    rules = load_rules(path, min_interval=POLL)

    assert [r.name for r in rules.rules] == ["odd"]
    assert [str(w) for w in rules.warnings] == [
        f"{path}:{line}: rules[0] 'odd': {where} {UNLISTED}" for line, where in expected
    ]


def test_warnings_come_in_file_and_line_order(tmp_path: Path) -> None:
    b = write(tmp_path, "b.yml", "rules:\n  - name: b\n    when: {type: SOS}\n")
    a = write(
        tmp_path,
        "a.yml",
        "rules:\n  - name: a2\n    when: {type: [ALERT]}\n  - name: a1\n    when: {type: SOS}\n",
    )

    warnings = load_rules(tmp_path).warnings

    assert [(w.source, w.line) for w in warnings] == [(str(a), 3), (str(a), 5), (str(b), 3)]


# Every *.yml / *.yaml entry of the folder is read, or said to be unreadable.
FOLDER_ENTRIES = [
    pytest.param(
        lambda p: p.symlink_to(p.parent / "gone.yml"),
        "a broken symbolic link (to {folder}/gone.yml, which does not exist); fix or remove it",
        id="dangling-symlink",
    ),
    pytest.param(
        lambda p: p.symlink_to(p),
        "a symbolic link that leads back to itself (a loop); fix or remove it",
        id="symlink-loop",
    ),
    pytest.param(
        lambda p: p.mkdir(),
        "a folder, not a rule file: rules are read only from the *.yml and *.yaml files "
        "directly in the rules folder; rename or move it",
        id="folder-named-like-a-rule-file",
    ),
    pytest.param(
        os.mkfifo,  # reading it would wait for a writer forever
        "not a regular file (a pipe, socket or device); a rule file is a plain file",
        id="named-pipe",
    ),
]


@pytest.mark.parametrize(("make", "message"), FOLDER_ENTRIES)
def test_folder_entry_that_is_not_a_readable_file(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    write(tmp_path, "10-good.yml", "rules:\n  - name: help\n    when: {type: HELP}\n")
    entry = tmp_path / "00-help.yml"
    make(entry)

    problems = problems_of(tmp_path)

    assert [str(p) for p in problems] == [f"{entry}: {message.format(folder=tmp_path)}"]


def test_an_editors_hidden_lock_file_is_no_rule_file(tmp_path: Path) -> None:
    write(tmp_path, "10-good.yml", "rules:\n  - name: help\n    when: {type: HELP}\n")
    (tmp_path / ".#10-good.yml").symlink_to(tmp_path / "user@host.1234")  # Emacs's lock

    rules = load_rules(tmp_path)

    assert [r.name for r in rules.rules] == ["help"]


def test_folder_entry_that_cannot_be_read(tmp_path: Path) -> None:
    write(tmp_path, "10-good.yml", "rules:\n  - name: help\n    when: {type: HELP}\n")
    entry = write(tmp_path, "00-help.yml", "rules: []\n")
    entry.chmod(0)
    try:
        entry.open("rb").close()
    except PermissionError:
        pass
    else:
        pytest.skip(f"running as uid {os.geteuid()}: a chmod 000 file stays readable to it")

    problems = problems_of(tmp_path)

    assert [str(p) for p in problems] == [f"{entry}: cannot read the file: Permission denied"]


def test_nothing_but_config_error_escapes(tmp_path: Path) -> None:
    # Whatever the bytes, the loader answers with problems, never another exception.
    path = tmp_path / "rules.yml"
    for text in (
        bytes(range(256)),
        b"\xff\xfe" + "rules: []".encode("utf-16-le"),
        b"rules: &a [*a]\n",
        b"rules:\n  - &r {name: x, when: {type: HELP}, notify: *r}\n",
        b"rules:\n  - {name: x, when: {silent_for: {times_usual_gap: 1e999}}}\n",
        b"rules:\n  - {name: x, when: {type: HELP}, escalate: [{after: " + b"9" * 4000 + b"}]}\n",
        b"rules:\n  - " + b"- " * 2000 + b"x\n",
        b"rules:\n  - {name: x, when: {type: HELP}, " + b"a: {" * 1000 + b"}" * 1000 + b"}\n",
    ):
        path.write_bytes(text)
        with pytest.raises(ConfigError) as caught:
            load_rules(path, min_interval=POLL)
        # ... each one explained, not caught by the loader's last-resort safety net
        assert not any("cannot be read as rules" in p.message for p in caught.value.problems)


def test_unknown_tag_accepted_without_known_tags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.yml",
        """
        rules:
          - name: help
            when: {type: HELP}
            notify: [rescu]
        """,
    )

    assert load_rules(path).by_name["help"].notify == ("rescu",)


def test_several_problems_in_one_file_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.yml",
        """
        rules:
          - name: help
            when: {type: HELP}
            repeat: soon
          - name: good
            when: {type: OK}
          - name: low
            when: {battery: LOW}
            severity: loud
        """,
    )

    problems = problems_of(path)

    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (4, "rules[0] 'help'"),
        (9, "rules[2] 'low'"),
    ]


def test_yaml_keeps_safe_semantics(tmp_path: Path) -> None:
    # Anchors and merge keys work as in yaml.safe_load; `off` is YAML 1.1 false.
    path = write(
        tmp_path,
        "rules.yml",
        """
        rules:
          - &help
            name: help
            when: {type: HELP}
            notify: [rescue]
            repeat: off
            updates: off
          - <<: *help
            name: help-test
            when: {type: TEST}
        """,
    )

    rules = load_rules(path)

    assert rules.by_name["help-test"].notify == ("rescue",)
    assert rules.by_name["help"].repeat is None
    assert rules.by_name["help"].updates is None


# --- schema behaviour ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(False, None, id="yaml-off"),
        pytest.param("off", None, id="off-string"),
        pytest.param(None, None, id="null"),
        pytest.param(90, 90.0, id="int-seconds"),
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("15m", 900.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param(0.5, 0.5, id="fractional"),
    ],
)
def test_repeat_values(value: object, expected: float | None) -> None:
    assert rule(repeat=value).repeat == expected


def test_repeat_and_updates_defaults() -> None:
    r = rule()

    assert r.repeat is None
    assert r.updates == 900.0
    assert rule(updates=False).updates is None


def test_silent_for_forms() -> None:
    fixed = rule(when={"silent_for": "45m"})
    relative = rule(when={"silent_for": {"times_usual_gap": 3, "at_least": "30m"}})

    assert fixed.when.silent_for == 45 * 60
    assert relative.when.silent_for == SilentFor(times_usual_gap=3, at_least=1800)
    assert fixed.when.trigger is relative.when.trigger is Trigger.SILENCE


def test_types_uppercased_and_single_string_accepted() -> None:
    assert rule(when={"type": ["help", " help-cancel "]}).when.types == ("HELP", "HELP-CANCEL")
    assert rule(when={"type": "HELP"}).when.types == ("HELP",)
    assert rule(when={"type": "Unknown"}).when.trigger is Trigger.UNKNOWN


def test_escalations_sorted_by_after() -> None:
    r = rule(
        escalate=[
            {"after": "1h", "notify": ["admin"]},
            {"after": "20m", "notify": "rescue-backup"},
        ]
    )

    assert [(e.after, e.notify) for e in r.escalate] == [
        (1200.0, ("rescue-backup",)),
        (3600.0, ("admin",)),
    ]
    assert {t for e in r.escalate for t in e.notify} | set(r.notify) == {"admin", "rescue-backup"}


@pytest.mark.parametrize(
    ("when", "subject"),
    [
        pytest.param({"type": ["HELP"]}, "HELP", id="help"),
        pytest.param({"type": ["OK", "HELP"]}, "HELP", id="help-among-others"),
        pytest.param({"type": ["STOP", "POWER-OFF"]}, "STOP message", id="other-type"),
        pytest.param({"type": "unknown"}, "Unknown message", id="unknown"),
        pytest.param({"battery": "LOW"}, "Low battery", id="battery"),
        pytest.param({"silent_for": "45m"}, "Silent", id="silence"),
    ],
)
def test_subject(when: dict[str, Any], subject: str) -> None:
    assert rule(when=when).subject == subject


def test_is_unknown_type() -> None:
    rules = RuleSet(
        rules=(
            rule(name="sos", when={"type": ["SOS-X"]}),
            rule(name="stale", when={"silent_for": "1h", "tracking": ["MOVING"]}),
        )
    )

    assert rules.is_unknown_type("SOS")
    assert not rules.is_unknown_type("TRACK")
    assert not rules.is_unknown_type("SOS-X")  # a rule names it
    assert not rules.is_unknown_type("MOVING")


def test_resolvers_of() -> None:
    help_ = rule(name="help")
    cancel = rule(name="cancel", when={"type": "HELP-CANCEL"}, resolves="help")
    rules = RuleSet(rules=(help_, cancel))

    assert rules.resolvers_of("help") == (cancel,)
    assert rules.resolvers_of("cancel") == ()


@pytest.mark.parametrize(
    ("when", "device", "expected"),
    [
        pytest.param({}, ("0-1", "Anna", "f1", "Club"), True, id="no-globs"),
        pytest.param({"device": "anna*"}, ("0-1", "Anna Smith", "f1", "Club"), True, id="name"),
        pytest.param({"device": ["0-12*"]}, ("0-123", "Bob", "f1", "Club"), True, id="id"),
        pytest.param({"device": ["ANNA*"]}, ("0-123", "Bob", "f1", "Club"), False, id="no-match"),
        pytest.param({"feed": "club"}, ("0-1", "Bob", "f1", "CLUB"), True, id="feed-name"),
        pytest.param(
            {"device": "Bob", "feed": "other"}, ("0-1", "Bob", "f1", "Club"), False, id="both"
        ),
    ],
)
def test_matches_device(
    when: dict[str, Any], device: tuple[str, str, str, str], expected: bool
) -> None:
    r = rule(when={"type": "HELP", **when})

    assert r.matches_device(*device) is expected
