"""Rule files: the schema's behaviour and the loader's file:line problems."""

from __future__ import annotations

import textwrap
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


def problems_of(path: Path, known_tags: set[str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_rules(path, known_tags)
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
            rule(name="stale", when={"silent_for": "1h", "tracking": ["MY-TRACK"]}),
        )
    )

    assert rules.is_unknown_type("SOS")
    assert not rules.is_unknown_type("TRACK")
    assert not rules.is_unknown_type("SOS-X")  # a rule names it
    assert not rules.is_unknown_type("MY-TRACK")


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
