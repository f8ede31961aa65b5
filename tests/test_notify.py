"""notify: the Apprise config as targets (tags, ids, masked labels, SMS form) and real sends."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import requests
import responses

from alerter.errors import ConfigError, Problem
from alerter.models import (
    Decision,
    Device,
    Incident,
    IncidentState,
    Message,
    Reason,
    Received,
    Severity,
    Subject,
)
from alerter.notify import (
    AppriseNotifier,
    Target,
    Targets,
    load_targets,
    mask_text,
    mask_url,
    read_targets,
)
from alerter.render import render

if TYPE_CHECKING:
    from conftest import JsonReceiver, SmtpServer

# Credentials shaped like real ones, so Apprise accepts them and masking has work to do.
TG_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TG_SECRET = TG_TOKEN.split(":")[1]
TG_URL = f"tgram://{TG_TOKEN}/12345"
TG_API = f"https://api.telegram.org/bot{TG_TOKEN}/sendMessage"
SLACK_TOKENS = "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
SLACK_SECRET = SLACK_TOKENS.rsplit("/", 1)[1]
SLACK_URL = f"slack://{SLACK_TOKENS}"
SLACK_HOOK = f"https://hooks.slack.com/services/{SLACK_TOKENS}"
TWILIO_SID = "AC" + "a1b2c3d4" * 4
TWILIO_AUTH = "f00dfeedf00dfeedf00dfeedf00dfeed"
TWILIO_URL = f"twilio://{TWILIO_SID}:{TWILIO_AUTH}@15551234567/15557654321"
TWILIO_API = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
JSON_URL = "json://127.0.0.1:9/hook?+X-Token=secret123"
MAIL_URL = "mailto://alice:hunter2pass@mail.alpenclub.ch?to=b@y.org"

ZURICH = ZoneInfo("Europe/Zurich")
T0 = 1_795_000_000.0


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def text_config(entries: list[tuple[str, str]]) -> str:
    """(tags, url) pairs as an Apprise TEXT config."""
    return "# targets\n" + "".join(
        f"{tags}={url}\n" if tags else f"{url}\n" for tags, url in entries
    )


def yaml_config(entries: list[tuple[str, str]]) -> str:
    """(tags, url) pairs as an Apprise YAML config."""
    lines = ["version: 1", "urls:"]
    for tags, url in entries:
        lines += [f'  - "{url}":', f"      - tag: {tags}"] if tags else [f'  - "{url}"']
    return "\n".join(lines) + "\n"


ENTRIES = [
    ("admin, ops", JSON_URL),
    ("rescue", MAIL_URL),
    ("rescue", TG_URL),
    ("rescue", TWILIO_URL),
    ("rescue, sms", SLACK_URL),
]


def help_decision() -> Decision:
    """Alice (Club) pressed HELP 7 minutes ago at a known position."""
    msg = Message(
        id=1, messenger_id="0-3537610", messenger_name="Alice", unix_time=int(T0),
        type="HELP", latitude=46.12345, longitude=7.12345, battery="GOOD",
        content="Fell, leg hurts",
    )  # fmt: skip
    received = Received(msg, "feed1", T0 + 30)
    incident = Incident(
        device_id="0-3537610", rule="help", state=IncidentState.OPEN,
        started_at=T0, opened_at=T0 + 30, updated_at=T0, id=1,
    )  # fmt: skip
    return Decision(
        reason=Reason.OPENED, incident=incident, rule="help", subject="HELP",
        kind=Subject.HELP, severity=Severity.CRITICAL,
        device=Device("0-3537610", "Alice", "feed1", last=received),
        feed_name="Club", message=received, tags=("rescue",), first_message=received,
    )  # fmt: skip


def only(targets: Targets, scheme: str) -> Target:
    [target] = [t for t in targets.targets if t.label.startswith(f"{scheme}://")]
    return target


# -- loading the config ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "text"])
def test_load_targets_reads_every_url_with_its_tags(tmp_path: Path, fmt: str) -> None:
    text = yaml_config(ENTRIES) if fmt == "yaml" else text_config(ENTRIES)
    targets = load_targets(write(tmp_path, f"apprise.{fmt}", text))

    assert [t.label.split("://")[0] for t in targets.targets] == [
        "json", "mailto", "tgram", "twilio", "slack",
    ]  # fmt: skip
    assert [t.tags for t in targets.targets] == [
        {"admin", "ops"}, {"rescue"}, {"rescue"}, {"rescue"}, {"rescue", "sms"},
    ]  # fmt: skip
    assert targets.tags() == {"admin", "ops", "rescue", "sms"}
    assert len({t.id for t in targets.targets}) == 5
    assert targets.source == str(tmp_path / f"apprise.{fmt}")


def test_ids_are_stable_across_loads_and_formats(tmp_path: Path) -> None:
    first = load_targets(write(tmp_path, "a.yml", yaml_config(ENTRIES)))
    again = load_targets(write(tmp_path, "b.yml", yaml_config(ENTRIES)))
    as_text = load_targets(write(tmp_path, "c.txt", text_config(ENTRIES)))

    ids = [t.id for t in first.targets]
    assert [t.id for t in again.targets] == ids
    assert [t.id for t in as_text.targets] == ids
    assert first.get(ids[2]) is first.targets[2]
    assert first.get("nope") is None


def test_id_survives_a_tag_change_but_not_a_url_change(tmp_path: Path) -> None:
    # Pending deliveries are keyed by id: re-tagging a URL must not orphan them.
    before = load_targets(write(tmp_path, "a.txt", f"rescue={JSON_URL}\n"))
    retagged = load_targets(write(tmp_path, "b.txt", f"admin,rescue={JSON_URL}\n"))
    other = load_targets(write(tmp_path, "c.txt", f"rescue={JSON_URL.replace('123', '124')}\n"))

    assert retagged.targets[0].id == before.targets[0].id
    assert other.targets[0].id != before.targets[0].id


@pytest.mark.parametrize(
    ("url", "secrets", "shown"),
    [
        pytest.param(JSON_URL, ["secret123"], "json://127.0.0.1:9/hook", id="json-header"),
        pytest.param(
            "json://127.0.0.1:9/hook?:token=secret123&-apikey=secret456",
            ["secret123", "secret456"],
            "json://127.0.0.1:9/hook",
            id="json-payload-and-param",
        ),
        pytest.param(MAIL_URL, ["hunter2pass"], "mailto://alice:", id="mailto-password"),
        pytest.param(TG_URL, [TG_TOKEN, TG_SECRET], "tgram://", id="telegram-token"),
        pytest.param(SLACK_URL, [SLACK_SECRET], "slack://", id="slack-webhook"),
        pytest.param(TWILIO_URL, [TWILIO_AUTH], "twilio://", id="twilio-auth-token"),
    ],
)
def test_labels_show_where_but_never_a_secret(
    tmp_path: Path, url: str, secrets: list[str], shown: str
) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={url}\n")).targets
    assert target.label.startswith(shown)
    for secret in secrets:
        assert secret not in target.label


def test_same_url_under_two_tags_is_one_target(tmp_path: Path) -> None:
    # Alice listed as rescue and as admin must get an alert for both tags once.
    text = f"rescue={JSON_URL}\nadmin={JSON_URL}\nadmin={SLACK_URL}\n"
    targets = load_targets(write(tmp_path, "apprise.txt", text))

    assert len(targets.targets) == 2
    assert targets.targets[0].tags == {"rescue", "admin"}
    assert [t.id for t in targets.for_tags(["rescue", "admin"])] == [
        targets.targets[0].id, targets.targets[1].id,
    ]  # fmt: skip


def test_for_tags_keeps_config_order_and_can_exclude(tmp_path: Path) -> None:
    targets = load_targets(write(tmp_path, "apprise.txt", text_config(ENTRIES)))
    json_t, mail_t, tg_t, twilio_t, slack_t = targets.targets

    assert targets.for_tags(["rescue"]) == [mail_t, tg_t, twilio_t, slack_t]
    assert targets.for_tags(["sms", "ops"]) == [json_t, slack_t]
    assert targets.for_tags(["rescue"], exclude=tg_t.id) == [mail_t, twilio_t, slack_t]
    assert targets.for_tags(["nobody"]) == []


@pytest.mark.parametrize(
    ("tags", "url", "short"),
    [
        pytest.param("rescue", TWILIO_URL, True, id="twilio-caps-at-160"),
        pytest.param("rescue,sms", JSON_URL, True, id="sms-tag"),
        pytest.param("sms", MAIL_URL, True, id="sms-tag-on-email"),
        pytest.param("rescue", JSON_URL, False, id="json"),
        pytest.param("rescue", MAIL_URL, False, id="email"),
        pytest.param("rescue", TG_URL, False, id="telegram-4096"),
        pytest.param("rescue", SLACK_URL, False, id="slack"),
    ],
)
def test_sms_sized_targets_get_the_short_form(
    tmp_path: Path, tags: str, url: str, short: bool
) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"{tags}={url}\n")).targets
    assert target.short is short


def test_apprise_throttle_is_off_after_loading(tmp_path: Path) -> None:
    targets = load_targets(write(tmp_path, "apprise.yml", yaml_config(ENTRIES)))
    # Email's default is 5.5 s between two sends: a second HELP must not wait for it.
    assert [t.plugin.request_rate_per_sec for t in targets.targets] == [0] * 5


# -- a config Apprise cannot use -----------------------------------------------------------

BAD_YAML = f"""\
version: 1
urls:
  - "{JSON_URL}":
      - tag: admin
  - "foobar://user:pw-secret777@host/x?token=secret888":
      - tag: rescue
  - "tgram://notatoken-secret999/12345":
      - tag: rescue
  - "{SLACK_URL}"
  - "secret333-not-a-url"
"""
BAD_TEXT = f"""\
# a comment
admin={JSON_URL}

rescue=foobar://user:pw-secret777@host/x?token=secret888
rescue=tgram://notatoken-secret999/12345
json://127.0.0.1/x?key=secret666=more
rescue!=json://127.0.0.1/x?+X-Token=secret555
foobar://host/x?token=secret444
"""


@pytest.mark.parametrize(
    ("name", "text", "faults"),
    [
        pytest.param("apprise.yml", BAD_YAML, [(5, "foobar"), (7, "tgram"), (10, None)], id="yaml"),
        pytest.param(
            "apprise.txt",
            BAD_TEXT,
            [(4, "foobar"), (5, "tgram"), (7, None), (8, "foobar")],
            id="text",
        ),
    ],
)
def test_bad_urls_are_named_by_file_and_line_without_secrets(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    text: str,
    faults: list[tuple[int, str | None]],
) -> None:
    caplog.set_level(logging.DEBUG)
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)

    problems = info.value.problems
    assert [(p.source, p.line) for p in problems] == [(str(path), line) for line, _ in faults]
    for problem, (_, scheme) in zip(problems, faults, strict=True):
        expected = f"this URL: {scheme}://…" if scheme else "this entry"
        assert problem.message == f"Apprise cannot use {expected} (masked)"
    assert str(info.value).startswith(f"{path}:{faults[0][0]}: ")
    # Neither the error nor anything logged meanwhile (Apprise's parser logs rejected
    # entries in clear) carries a secret.
    for secret in ("secret", "pw-", "notatoken", "X-Token"):
        assert secret not in str(info.value)
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("apprise.txt", "", "no notification URL found", id="empty-text"),
        pytest.param(
            "apprise.txt",
            "# nobody yet\n; really\n",
            "no notification URL found",
            id="only-comments",
        ),
        pytest.param(
            "apprise.yml", "version: 1\nurls: []\n", "no notification URL found", id="yaml-empty"
        ),
        pytest.param("apprise.yml", "version: 1\n", "no notification URL found", id="yaml-no-urls"),
    ],
)
def test_a_config_without_urls_is_an_error(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"apprise\.yml: cannot read"):
        load_targets(tmp_path / "apprise.yml")


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = f'version: 1\nurls:\n  - "{JSON_URL}":\n      - tag: [admin\n'
    path = write(tmp_path, "apprise.yml", text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    [problem] = info.value.problems
    assert problem.line is not None
    assert problem.line >= 4
    assert "secret123" not in str(info.value)


# -- what admins get wrong: each problem at its own line, never a secret -------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "apprise.example.yml"
SECRET = "s3cr3t-value-never-printed"


def problems_of(tmp_path: Path, name: str, text: str) -> list[str]:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert SECRET not in str(info.value)
    return [str(p).removeprefix(f"{path}:") for p in info.value.problems]


def test_the_example_config_lists_every_placeholder(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    url_lines = [n for n, line in enumerate(lines, 1) if line.startswith("  - ") and "://" in line]
    schemes = [lines[n - 1].split("://")[0].removeprefix("  - ") for n in url_lines]

    reading = read_targets(EXAMPLE)

    assert len(url_lines) == 6
    assert [(p.line, p.message.split(": ", 2)[:2]) for p in reading.problems] == [
        (n, ["placeholder left in this URL", f"{s}://… (masked)"])
        for n, s in zip(url_lines, schemes, strict=True)
    ]
    assert reading.tags == {"rescue", "rescue-backup", "sms", "admin"}


@pytest.mark.parametrize(
    ("url", "found"),
    [
        pytest.param(f"json://h/hook?+X-Token=YOUR_TOKEN&+Auth={SECRET}", "YOUR…", id="YOUR_TOKEN"),
        pytest.param(f"mailtos://me:your-password@mail.club.ch?to={SECRET}@club.ch", "YOUR…",
                     id="your-password"),
        pytest.param(f"tgram://123456789:xxxxxxxxxxxx/{SECRET}", "xxxx", id="xxxx"),
        pytest.param(f"mailtos://me:{SECRET}@mail.example.com", "example.com", id="example.com"),
        pytest.param(f"mailto://me:{SECRET}@mail.club.ch?to=ops@example.org", "example.com",
                     id="example.org-recipient"),
        pytest.param(f"json://h/hook?+X-Token=<token>&k={SECRET}", "<…>", id="angle-brackets"),
        pytest.param(f"mailtos://me:changeme@mail.club.ch?to={SECRET}@club.ch", "changeme",
                     id="changeme"),
        pytest.param(f"ntfys://ntfy.sh/REPLACE-WITH-A-TOPIC?auth={SECRET}", "REPLACE-ME",
                     id="replace-with"),
        pytest.param("slack://T00000000/B00000000/REPLACEMEREPLACEME/#x", "REPLACE-ME",
                     id="slack-example"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("fmt", ["yaml", "text"])
def test_a_placeholder_is_a_problem_at_its_line(
    tmp_path: Path, fmt: str, url: str, found: str
) -> None:
    entries = [("admin", JSON_URL), ("rescue", url)]
    text = yaml_config(entries) if fmt == "yaml" else text_config(entries)
    line = 5 if fmt == "yaml" else 3
    scheme = url.split("://", maxsplit=1)[0]

    assert problems_of(tmp_path, f"apprise.{fmt}", text) == [
        f"{line}: placeholder left in this URL: {scheme}://… (masked): {found}: put in the real "
        "values, or delete the entry"
    ]


@pytest.mark.parametrize(
    "url",
    [
        TG_URL, SLACK_URL, TWILIO_URL, MAIL_URL, JSON_URL,
        "ntfys://ntfy.sh/aB3dE5fG7hJ9kL1mNoPq",
        "mailto://me:pw@mail.club.ch?to=yourself@club.ch",  # `your` alone is no placeholder
        "json://h/a1xxxxb2",  # nor `xxxx` inside a token
        "mailto://me:pw@mail.example-club.ch?to=ops@counterexample.com",
    ],
)  # fmt: skip
def test_real_urls_are_no_placeholders(tmp_path: Path, url: str) -> None:
    reading = read_targets(write(tmp_path, "apprise.txt", f"rescue={url}\n"))
    assert reading.problems == []


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param("apprise.yml", "urls:\n  - json://:\n      - tag: rescue\n",
                     ["2: this URL has no host: json://… (masked)"], id="yaml-json-no-host"),
        pytest.param("apprise.txt", f"rescue=json:///hook?+X-Token={SECRET}\n",
                     ["1: this URL has no host: json://… (masked)"], id="json-path-as-host"),
        pytest.param("apprise.txt", "rescue=json://\n",
                     ["1: Apprise cannot use this URL: json://… (masked): it has no host"],
                     id="text-json-nothing"),
        pytest.param("apprise.txt", f"rescue=mailto://?to=a@club.ch&pass={SECRET}\n",
                     ["1: Apprise cannot use this URL: mailto://… (masked): it has no host"],
                     id="mailto-no-host"),
        pytest.param("apprise.yml", "urls:\n  - mailto://:\n      - tag: rescue\n",
                     ["2: Apprise cannot use this URL: mailto://… (masked): it has no host"],
                     id="yaml-mailto-no-host"),
        pytest.param("apprise.yml", "urls:\n  - json://:\n      - host: hooks.club.ch\n"
                     "        tag: rescue\n", [], id="yaml-host-setting-is-a-host"),
        pytest.param("apprise.txt", "rescue=ntfys://ntfy.sh\n",
                     ["1: this URL names no topic: ntfys://… (masked)"], id="ntfy-no-topic"),
    ],
)  # fmt: skip
def test_a_url_without_host_is_a_problem(
    tmp_path: Path, name: str, text: str, expected: list[str]
) -> None:
    if not expected:
        assert read_targets(write(tmp_path, name, text)).problems == []
        return
    assert problems_of(tmp_path, name, text) == expected


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "apprise.yml",
            f"version: 1\nurls:\n  - {JSON_URL}:\n      - tag rescue\n  - {SLACK_URL}:\n"
            "      - tag: admin\n",
            ["4: 'tag rescue' has no colon: write 'tag: rescue'"], id="yaml-list-item",
        ),
        pytest.param(
            "apprise.yml", f"urls:\n  - {JSON_URL}:\n      tags rescue, admin\n",
            ["3: 'tags rescue, admin' has no colon: write 'tags: rescue, admin'"],
            id="yaml-scalar",
        ),
        pytest.param(
            "apprise.yml", f"urls:\n  - {JSON_URL}:\n      - {SECRET}\n",
            ["3: expected a `key: value` setting under the URL above (a colon missing?)"],
            id="yaml-not-a-tag",
        ),
        pytest.param(
            "apprise.yml", f"urls:\n  - bogus://{SECRET}:\n      - tag rescue\n",
            ["2: Apprise cannot use this URL: bogus://… (masked)",
             "3: 'tag rescue' has no colon: write 'tag: rescue'"],
            id="and-a-bad-url",
        ),
        pytest.param(
            "apprise.yml", f"urls:\n  - {JSON_URL}:\n    tag: rescue\n    format: text\n",
            ["3: 'tag' is at the level of the URL above it: indent it under that URL",
             "4: 'format' is at the level of the URL above it: indent it under that URL"],
            id="yaml-setting-at-url-level",
        ),
        pytest.param(
            "apprise.yml",
            f"urls:\n  - {JSON_URL}:\n      tag: rescue\n      mailto://me:{SECRET}@club.ch:\n",
            ["4: a URL (mailto://…) among the settings of the URL above it: start it with its "
             "own '- ' at that URL's level"],
            id="yaml-url-indented-too-far",
        ),
        pytest.param("apprise.txt", f"admin={SLACK_URL}\nrescue {JSON_URL}\n",
                     ["2: tags and URL need '=' between them: write 'rescue=json://…'"],
                     id="text-no-equals"),
        pytest.param("apprise.txt", f"rescue, sms: {JSON_URL}\n",
                     ["1: tags and URL need '=' between them: write 'rescue,sms=json://…'"],
                     id="text-colon-for-equals"),
        pytest.param("apprise.txt", f"admin={SLACK_URL}\nsms rescue\n",
                     ["2: not an Apprise TEXT line (`TAGS=URL`, a `#` comment or a tag group)"],
                     id="text-stray-words"),
        pytest.param("apprise.txt", f"admin={SLACK_URL}\ninclude https://{SECRET}.club.ch/a\n",
                     ["2: `include` is not supported: list URLs here"], id="text-include"),
        pytest.param("apprise.yml", f"include:\n  - https://{SECRET}.club.ch/a\nurls:\n"
                     f"  - {JSON_URL}\n", ["1: `include` is not supported: list URLs here"],
                     id="yaml-include"),
        pytest.param("apprise.yml", f"urls: {JSON_URL}\n",
                     ["1: `urls:` must be a list, each URL starting with '- '"],
                     id="yaml-urls-not-a-list"),
    ],
)  # fmt: skip
def test_a_shape_mistake_is_blamed_on_its_own_line(
    tmp_path: Path, name: str, text: str, expected: list[str]
) -> None:
    assert problems_of(tmp_path, name, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"version: 1\nurls:\n  - {JSON_URL}:\n      - tag: rescue\n    foo: bar: "
                     "baz\n", "5: YAML syntax error: mapping values are not allowed here",
                     id="mapping-values"),
        pytest.param(f"urls:\n  - {JSON_URL}:\n\t- tag: rescue\n",
                     "3: YAML syntax error: found character '\\t' that cannot start any token",
                     id="tab"),
        pytest.param(f'urls:\n  - "{JSON_URL}:\n      - tag: rescue\n',
                     "4: YAML syntax error: found unexpected end of stream", id="open-quote"),
        pytest.param(f"urls:\n  - {JSON_URL}:\n      - tag: [admin\n",
                     "4: YAML syntax error: expected ',' or ']', but got '<stream end>'",
                     id="open-bracket"),
    ],
)  # fmt: skip
def test_yaml_syntax_errors_give_the_parsers_words(
    tmp_path: Path, text: str, expected: str
) -> None:
    reading = read_targets(write(tmp_path, "apprise.yml", text))
    assert [str(p).removeprefix(f"{tmp_path / 'apprise.yml'}:") for p in reading.problems] == [
        expected
    ]
    assert reading.tags is None  # nothing could be read: rules' tags stay unchecked
    assert "secret123" not in str(reading.problems)


def test_a_config_with_problems_still_gives_what_it_could_read(tmp_path: Path) -> None:
    text = f"admin={JSON_URL}\nrescue=bogus://{SECRET}\nrescue-backup,sms=json://\n"
    reading = read_targets(write(tmp_path, "apprise.txt", text))

    assert [p.line for p in reading.problems] == [2, 3]
    assert [t.label.split("?")[0] for t in reading.targets.targets] == ["json://127.0.0.1:9/hook"]
    # Every tag written counts, usable URL or not: the rules' tags are still checked.
    assert reading.tags == {"admin", "rescue", "rescue-backup", "sms"}


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        pytest.param(b"rescue=json://h/x\nadmin=json://h/\xff\n", 2,
                     "not UTF-8 text (byte 0xff): save it as UTF-8", id="not-utf8"),
        pytest.param(None, None, "cannot read: Is a directory", id="a-folder"),
    ],
)  # fmt: skip
def test_an_unreadable_config_is_one_problem(
    tmp_path: Path, content: bytes | None, line: int | None, message: str
) -> None:
    path = tmp_path / "apprise.txt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    reading = read_targets(path)
    assert reading.problems == [Problem(str(path), line, message)]
    assert reading.tags is None


# -- masking -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        pytest.param(
            "json://host/hook?%2BX-Token=secret123&format=text",
            "json://host/hook?%2BX-Token=***&format=text",
            id="header-value",
        ),
        pytest.param(
            "json://host/hook?:token=abc&-key=def&method=POST",
            "json://host/hook?%3Atoken=***&-key=***&method=POST",
            id="payload-and-params",
        ),
        pytest.param(
            "mailto://bob:hunter2@mail.example.org/?to=carol%40example.org&cto=15",
            "mailto://bob:****@mail.example.org/?to=***&cto=15",
            id="raw-password-and-recipient",
        ),
        pytest.param(
            "mailto://bob:****@mail.example.org",
            "mailto://bob:****@mail.example.org",
            id="already-masked",
        ),
        pytest.param(
            f"tgram://{TG_TOKEN}/12345", "tgram://…/12345", id="raw-token-in-host-or-path"
        ),
        pytest.param(f"slack://{SLACK_TOKENS}", "slack://T1JJ3T3L2/A1BRTD4JD/…", id="raw-slack"),
        pytest.param(
            "tgram://1...w/12345/?detect=no", "tgram://1...w/12345/?detect=no", id="apprise-masked"
        ),
        pytest.param("https://host/path#frag-secret", "https://host/path", id="fragment"),
        pytest.param("http://[::1", "(unprintable URL)", id="unparseable"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        pytest.param(
            "Failed to send to https://api.telegram.org/bot123:ABC/sendMessage: 401",
            "Failed to send to https://… 401",
            id="url",
        ),
        pytest.param(
            f"Connection error on /bot{TG_TOKEN}/sendMessage",
            "Connection error on /…/sendMessage",
            id="token",
        ),
        pytest.param(
            "Failed to send JSON POST notification: Internal server error., error=500.",
            "Failed to send JSON POST notification: Internal server error., error=500.",
            id="plain-error-kept",
        ),
        pytest.param("", "", id="empty"),
    ],
)
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


# -- real sends ----------------------------------------------------------------------------


async def test_email_arrives_with_title_as_subject_and_body_lines_intact(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={smtp_server.url()}\n")).targets
    rendered = render(help_decision(), T0 + 7 * 60, ZURICH)

    result = await AppriseNotifier().send(target, rendered.title, rendered.body, rendered.severity)

    assert result.ok, result.error
    assert smtp_server.envelopes == [("a@x.org", ["b@y.org"])]
    [mail] = smtp_server.messages
    assert mail["Subject"] == "HELP: Alice (Club)" == rendered.title
    plain = mail.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    # Newlines survive (Apprise collapses them without body_format=TEXT).
    assert text.splitlines() == rendered.body.splitlines()
    assert len(text.splitlines()) > 8
    osm = "https://www.openstreetmap.org/?mlat=46.12345&mlon=7.12345#map=14/46.12345/7.12345"
    assert f"Map: {osm}" in text.splitlines()


async def test_two_emails_to_one_target_are_not_throttled(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={smtp_server.url()}\n")).targets
    notifier = AppriseNotifier()

    started = time.monotonic()
    first = await notifier.send(target, "HELP: Alice (Club)", "one", Severity.CRITICAL)
    second = await notifier.send(target, "HELP: Bob (Club)", "two", Severity.CRITICAL)
    elapsed = time.monotonic() - started

    assert first.ok
    assert second.ok
    assert [m["Subject"] for m in smtp_server.messages] == [
        "HELP: Alice (Club)",
        "HELP: Bob (Club)",
    ]
    assert elapsed < 2.5  # Apprise's own email throttle would make it over 5.5 s


@pytest.mark.parametrize(
    ("severity", "kind"),
    [(Severity.CRITICAL, "failure"), (Severity.WARNING, "warning"), (Severity.INFO, "info")],
)
async def test_json_target_gets_title_message_and_type(
    tmp_path: Path, json_receiver: JsonReceiver, severity: Severity, kind: str
) -> None:
    url = json_receiver.url("/hook", "+X-Token=secret123")
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={url}\n")).targets

    result = await AppriseNotifier().send(target, "HELP: Alice (Club)", "line 1\nline 2", severity)

    assert result.ok, result.error
    [post] = json_receiver.posts
    assert post.path == "/hook"
    assert post.json["title"] == "HELP: Alice (Club)"
    assert post.json["message"] == "line 1\nline 2"
    assert post.json["type"] == kind
    assert post.headers["X-Token"] == "secret123"  # the header reaches the receiver, not the label


async def test_json_target_answering_500_is_a_failure_without_secrets(
    tmp_path: Path, json_receiver: JsonReceiver
) -> None:
    url = json_receiver.url("/hook", "+X-Token=secret123")
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={url}\n")).targets
    json_receiver.fail("/hook", 500)

    result = await AppriseNotifier().send(target, "HELP: Alice (Club)", "body", Severity.CRITICAL)

    assert not result.ok
    assert result.error.startswith("FAILURE")
    assert "500" in result.error
    assert "secret123" not in result.error
    assert len(json_receiver.posts) == 1  # one try: retrying is the outbox's job


async def test_telegram_gets_title_and_body(tmp_path: Path) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={TG_URL}\n")).targets
    with responses.RequestsMock() as mock:
        mock.post(TG_API, json={"ok": True, "result": {"message_id": 1}})
        result = await AppriseNotifier().send(
            target, "HELP: Alice (Club)", "Alice pressed HELP.\nBattery: GOOD", Severity.CRITICAL
        )
        [call] = mock.calls

    assert result.ok, result.error
    payload = json.loads(call.request.body or b"{}")
    assert payload["chat_id"] == 12345
    assert "HELP: Alice (Club)" in payload["text"]
    assert "Alice pressed HELP." in payload["text"]
    assert "Battery: GOOD" in payload["text"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            {"status": 401, "json": {"ok": False, "description": "Unauthorized"}}, id="401"
        ),
        pytest.param(
            # The API's description is quoted into Apprise's warning: here it echoes the token.
            {"status": 400, "json": {"ok": False, "description": f"bot {TG_TOKEN}: bad chat"}},
            id="400-echoing-the-token",
        ),
        pytest.param(
            {"body": requests.ConnectionError(f"Max retries exceeded with url: /bot{TG_TOKEN}/x")},
            id="connection-error",
        ),
    ],
)
async def test_telegram_failure_is_reported_masked(
    tmp_path: Path, answer: dict[str, object]
) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={TG_URL}\n")).targets
    with responses.RequestsMock() as mock:
        mock.post(TG_API, **answer)  # type: ignore[arg-type]
        result = await AppriseNotifier().send(target, "HELP: Alice", "body", Severity.CRITICAL)

    assert not result.ok
    assert result.error.startswith("FAILURE; ")
    assert "Telegram" in result.error
    assert TG_SECRET not in result.error
    assert len(result.error) <= 300


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        pytest.param(200, "ok", True, id="ok"),
        pytest.param(200, "invalid_token", False, id="200-but-not-ok"),
        pytest.param(404, "no_service", False, id="404"),
    ],
)
async def test_slack_webhook(tmp_path: Path, status: int, body: str, ok: bool) -> None:
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={SLACK_URL}\n")).targets
    with responses.RequestsMock() as mock:
        mock.post(SLACK_HOOK, status=status, body=body)
        result = await AppriseNotifier().send(
            target, "Silent: Bob (Club)", "Bob has been silent since 14:03 UTC", Severity.WARNING
        )
        [call] = mock.calls

    assert result.ok is ok
    assert SLACK_SECRET not in result.error
    sent = json.dumps(json.loads(call.request.body or b"{}"))
    assert "Silent: Bob (Club)" in sent
    assert "Bob has been silent since 14:03 UTC" in sent


async def test_sms_target_gets_exactly_the_short_text(tmp_path: Path) -> None:
    # The outbox sends the short form with an empty title: nothing may be added to it.
    [target] = load_targets(write(tmp_path, "apprise.txt", f"rescue={TWILIO_URL}\n")).targets
    rendered = render(help_decision(), T0 + 7 * 60, ZURICH)
    assert target.short
    with responses.RequestsMock() as mock:
        mock.post(TWILIO_API, status=201, json={"sid": "SM1"})
        result = await AppriseNotifier().send(target, "", rendered.short, rendered.severity)
        [call] = mock.calls

    assert result.ok, result.error
    form = parse_qs(str(call.request.body))
    assert form["Body"] == [rendered.short]
    assert form["To"] == ["+15557654321"]
    assert len(rendered.short) <= 160
