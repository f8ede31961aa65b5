"""config: the Apprise config and the rules read together, every problem of both in one pass."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from alerter.config import load_config, read_config
from alerter.errors import ConfigError, Problem
from alerter.settings import Settings, load_settings

SECRET = "do-not-print-this-token-0123456789"
GOOD_APPRISE = "rescue=json://127.0.0.1:9/x\nadmin=json://127.0.0.1:9/admin\n"
BAD_APPRISE = f"rescue=json://127.0.0.1:9/x\nadmin=bogus://{SECRET}\n"  # line 2 is bad
GOOD_RULES = """
    rules:
      - name: help
        when: {type: [HELP]}
        notify: [rescue]
"""
UNKNOWN_KEY_RULES = """
    rules:
      - name: help
        when: {type: [HELP]}
        notfy: [rescue]
"""  # line 4 is bad
UNKNOWN_TAG_RULES = GOOD_RULES.replace("[rescue]", "[nobody]")  # line 4


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


def settings_with(tmp_path: Path, apprise: str, rules: str, **overrides: Any) -> Settings:
    (tmp_path / "apprise.txt").write_text(apprise, encoding="utf-8")
    (tmp_path / "rules.yml").write_text(textwrap.dedent(rules).lstrip("\n"), encoding="utf-8")
    return load_settings(
        env_file=None,
        state_dir=tmp_path / "state",
        rules=tmp_path / "rules.yml",
        apprise_config=tmp_path / "apprise.txt",
        **overrides,
    )


def where(problems: list[Problem], tmp_path: Path) -> list[tuple[str, int | None]]:
    return [(str(Path(p.source).relative_to(tmp_path)), p.line) for p in problems]


@pytest.mark.parametrize(
    ("apprise", "rules", "expected", "phrases"),
    [
        pytest.param(
            BAD_APPRISE, UNKNOWN_KEY_RULES, [("apprise.txt", 2), ("rules.yml", 4)],
            ["Apprise cannot use this URL: bogus://", "unknown key 'notfy'"],
            id="both-files-bad",
        ),
        pytest.param(
            GOOD_APPRISE, UNKNOWN_TAG_RULES, [("rules.yml", 4)],
            ["tag 'nobody' is not carried by any Apprise URL (known: admin, rescue)"],
            id="tag-no-url-carries",
        ),
        # A broken URL does not hide a rule's unknown tag: tags are checked against every
        # tag written in the Apprise config (`admin` is on the broken line).
        pytest.param(
            BAD_APPRISE, UNKNOWN_TAG_RULES, [("apprise.txt", 2), ("rules.yml", 4)],
            ["Apprise cannot use",
             "tag 'nobody' is not carried by any Apprise URL (known: admin, rescue)"],
            id="tags-checked-despite-a-broken-url",
        ),
        # ... and the broken URL's own tag is not called unknown on top of its problem.
        pytest.param(
            BAD_APPRISE, GOOD_RULES.replace("[rescue]", "[admin]"), [("apprise.txt", 2)],
            ["Apprise cannot use"], id="a-broken-urls-tags-still-count",
        ),
        # With no URL readable at all there are no tags to check against: the Apprise
        # config's problem is reported, not one "unknown tag" per rule on top of it.
        pytest.param(
            "rescue json://127.0.0.1:9/x\n", UNKNOWN_TAG_RULES,
            [("apprise.txt", 1), ("rules.yml", 4)],
            ["tags and URL need '=' between them: write 'rescue=json://…'",
             "tag 'nobody' is not carried by any Apprise URL (known: rescue)"],
            id="text-line-without-equals",
        ),
        pytest.param(
            GOOD_APPRISE, "rules: []\n", [("rules.yml", None)],
            ["no rules: nobody would be alerted"], id="no-rules",
        ),
        pytest.param(
            GOOD_APPRISE, "", [("rules.yml", 1)], ["the file is empty"], id="empty-rules-file",
        ),
        pytest.param(
            "# nothing here\n", "rules: []\n", [("apprise.txt", None), ("rules.yml", None)],
            ["no notification URL found", "no rules: nobody would be alerted"],
            id="neither-file-useful",
        ),
    ],
)  # fmt: skip
def test_read_config_reports_every_problem_of_both_files(
    tmp_path: Path,
    apprise: str,
    rules: str,
    expected: list[tuple[str, int | None]],
    phrases: list[str],
) -> None:
    reading = read_config(settings_with(tmp_path, apprise, rules))

    assert where(reading.problems, tmp_path) == expected
    for problem, phrase in zip(reading.problems, phrases, strict=True):
        assert phrase in problem.message
    assert all(SECRET not in str(p) for p in reading.problems)


def test_read_config_keeps_what_it_could_read(tmp_path: Path) -> None:
    reading = read_config(settings_with(tmp_path, GOOD_APPRISE, UNKNOWN_KEY_RULES))

    assert reading.rules is None
    assert reading.targets is not None
    assert reading.targets.tags() == {"rescue", "admin"}


def test_load_config_raises_listing_every_problem(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, BAD_APPRISE, UNKNOWN_KEY_RULES)

    with pytest.raises(ConfigError) as caught:
        load_config(settings)

    assert caught.value.problems == read_config(settings).problems
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{tmp_path / 'apprise.txt'}:2",
        f"{tmp_path / 'rules.yml'}:4",
    ]
    assert SECRET not in str(caught.value)


def test_load_config_refuses_an_empty_rule_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(settings_with(tmp_path, GOOD_APPRISE, "rules: []\n"))

    assert str(caught.value) == f"{tmp_path / 'rules.yml'}: no rules: nobody would be alerted"


def test_load_config_gives_rules_and_targets(tmp_path: Path) -> None:
    cfg = load_config(settings_with(tmp_path, GOOD_APPRISE, GOOD_RULES))

    assert [r.name for r in cfg.rules.rules] == ["help"]
    assert [sorted(t.tags) for t in cfg.targets.targets] == [["rescue"], ["admin"]]


TOO_OFTEN = GOOD_RULES + "        repeat: 2m\n        updates: 30s\n"  # lines 5 and 6
LOCAL_SPOT = "http://127.0.0.1:9/feed"  # off SPOT's host, the poll interval may be shorter
REMIND = "it would remind faster than the service can see anything"
UPDATE = "it would send updates faster than the service can see anything"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {},
            [
                f"rules.yml:5: rules[0] 'help': repeat: 2m is below the poll interval (150s): "
                f"{REMIND}",
                f"rules.yml:6: rules[0] 'help': updates: 30s is below the poll interval (150s): "
                f"{UPDATE}",
            ],
            id="spots-interval",
        ),
        pytest.param(
            {"spot_base_url": LOCAL_SPOT, "poll_interval": "5m"},
            [
                f"rules.yml:5: rules[0] 'help': repeat: 2m is below the poll interval (300s): "
                f"{REMIND}",
                f"rules.yml:6: rules[0] 'help': updates: 30s is below the poll interval (300s): "
                f"{UPDATE}",
            ],
            id="a-longer-interval",
        ),
        pytest.param(
            {"spot_base_url": LOCAL_SPOT, "poll_interval": "1m"},
            [
                f"rules.yml:6: rules[0] 'help': updates: 30s is below the poll interval (60s): "
                f"{UPDATE}"
            ],
            id="a-shorter-interval",
        ),
    ],
)
def test_read_config_checks_the_rules_against_the_poll_interval(
    tmp_path: Path, overrides: dict[str, Any], expected: list[str]
) -> None:
    reading = read_config(settings_with(tmp_path, GOOD_APPRISE, TOO_OFTEN, **overrides))

    assert [str(p).removeprefix(f"{tmp_path}/") for p in reading.problems] == expected
    assert reading.rules is None


def test_read_config_carries_the_rules_warnings_and_load_config_starts_with_them(
    tmp_path: Path,
) -> None:
    settings = settings_with(tmp_path, GOOD_APPRISE, GOOD_RULES.replace("[HELP]", "[HELP, SOS]"))

    reading = read_config(settings)

    assert reading.problems == []
    assert [str(w).removeprefix(f"{tmp_path}/") for w in reading.warnings] == [
        "rules.yml:3: rules[0] 'help': when.type[1]: 'SOS' is not a message type SPOT is known "
        "to send: fine if SPOT adds it, but check the spelling (and `type: unknown` no longer "
        "catches it)"
    ]
    assert reading.rules is not None
    assert list(reading.rules.warnings) == reading.warnings
    assert load_config(settings).rules.warnings == tuple(reading.warnings)


def settings_with_yaml(tmp_path: Path, apprise: str, rules: str) -> Settings:
    (tmp_path / "apprise.yml").write_text(apprise, encoding="utf-8")
    (tmp_path / "rules.yml").write_text(textwrap.dedent(rules).lstrip("\n"), encoding="utf-8")
    return load_settings(
        env_file=None,
        state_dir=tmp_path / "state",
        rules=tmp_path / "rules.yml",
        apprise_config=tmp_path / "apprise.yml",
    )


DUPLICATE_AND_UNKNOWN_TAG = """
    rules:
      - name: help
        when: {type: [HELP]}
        notify: [rescue]
      - name: help
        when: {type: [OK]}
        notify: [nobody]
"""  # line 5: the name again; line 7: a tag nobody carries


@pytest.mark.parametrize(
    ("apprise", "expected"),
    [
        pytest.param(
            f"urls:\n  - json://127.0.0.1:9/x:\n      - tag rescue\n"
            f"  - mailtos://me:{SECRET}@mail.example.com:\n      - tag: admin\n",
            [
                "apprise.yml:3: 'tag rescue' has no colon: write 'tag: rescue'",
                "apprise.yml:4: placeholder left in this URL: mailtos://… (masked): example.com: "
                "put in the real values, or delete the entry",
                "rules.yml:5: rules[1] 'help': name: another rule is already named 'help' "
                "(rules.yml:2); rule names must be unique",
                "rules.yml:7: rules[1] 'help': notify: tag 'nobody' is not carried by any "
                "Apprise URL (known: admin, rescue)",
            ],
            id="every-problem-of-both-files",
        ),
        pytest.param(
            f"urls:\n  - json://127.0.0.1:9/x:\n      - tag: rescue\n    foo: bar: {SECRET}\n",
            [
                "apprise.yml:4: YAML syntax error: mapping values are not allowed here",
                "rules.yml:5: rules[1] 'help': name: another rule is already named 'help' "
                "(rules.yml:2); rule names must be unique",
            ],
            id="yaml-error-leaves-tags-unchecked",
        ),
    ],
)
def test_read_config_reports_every_problem_in_one_pass(
    tmp_path: Path, apprise: str, expected: list[str]
) -> None:
    reading = read_config(settings_with_yaml(tmp_path, apprise, DUPLICATE_AND_UNKNOWN_TAG))

    assert [str(p).replace(f"{tmp_path}/", "") for p in reading.problems] == expected
    assert all(SECRET not in str(p) for p in reading.problems)


def test_read_config_shows_the_usable_targets_of_a_config_with_problems(tmp_path: Path) -> None:
    reading = read_config(settings_with(tmp_path, BAD_APPRISE, GOOD_RULES))

    assert [p.line for p in reading.problems] == [2]
    assert [sorted(t.tags) for t in reading.targets.targets] == [["rescue"]]
