"""The log's shape: journald priority prefixes, JSON lines, one record per event, masked."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from alerter import logs, masking
from alerter.cli import setup_logging

SECRET = "hunter2-very-secret-token"


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> masking.Registry:
    """A fresh secret registry per test (secrets never leak between tests)."""
    fresh = masking.Registry()
    monkeypatch.setattr(masking, "REGISTRY", fresh)
    return fresh


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("", "apprise", "urllib3")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


@pytest.fixture
def stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TextIO]:
    """A real file for stderr (journald's check compares its device and inode); each
    test puts it in place itself (`use`): pytest's capture sets sys.stderr after the
    fixtures have run."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as f:
        yield f


def use(monkeypatch: pytest.MonkeyPatch, stream: TextIO) -> None:
    monkeypatch.setattr(sys, "stderr", stream)


def journal_stream(monkeypatch: pytest.MonkeyPatch, stream: TextIO) -> None:
    """What systemd sets when stderr is connected to the journal."""
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def lines(stream: TextIO) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    stream.seek(0)
    return stream.read().splitlines()


def fail(message: str) -> None:
    raise RuntimeError(message)


def log_a_bit() -> None:
    log = logging.getLogger("alerter.test")
    log.debug("dbg")
    log.info("info")
    log.warning("warn")
    log.error("err")
    log.critical("crit")


def test_journald_prefixes_when_stderr_is_the_journal(
    stderr: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, stderr)
    journal_stream(monkeypatch, stderr)
    setup_logging("DEBUG")
    log_a_bit()
    assert lines(stderr) == [
        "<7>DEBUG alerter.test: dbg",
        "<6>INFO alerter.test: info",
        "<4>WARNING alerter.test: warn",
        "<3>ERROR alerter.test: err",
        "<2>CRITICAL alerter.test: crit",
    ]


def test_no_prefix_on_a_terminal_or_when_the_variable_names_another_stream(
    stderr: TextIO, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use(monkeypatch, stderr)
    setup_logging("DEBUG")
    log_a_bit()
    with (tmp_path / "other").open("w") as other:
        journal_stream(monkeypatch, other)  # inherited from a parent whose stderr it was
        setup_logging("DEBUG")
        log_a_bit()
    got = lines(stderr)
    assert len(got) == 10
    assert not any(line.startswith("<") for line in got), got
    assert " WARNING alerter.test: warn" in got[2]  # the terminal keeps its timestamp


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", False), ("garbage", False), ("1:", False), (":2", False), ("a:b", False)],
)
def test_a_malformed_journal_stream_is_no_journal(
    stderr: TextIO, value: str, expected: bool
) -> None:
    assert logs.under_journald(stderr, {"JOURNAL_STREAM": value}) is expected


def test_a_stream_without_a_file_is_no_journal() -> None:
    assert not logs.under_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_json_lines_parse_and_carry_the_fields(
    stderr: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, stderr)
    setup_logging("INFO", "json")
    logging.getLogger("alerter.test").info("hello %s", "world")
    try:
        fail("boom")
    except RuntimeError:
        logging.getLogger("alerter.test").exception("it failed")
    got = [json.loads(line) for line in lines(stderr)]
    assert len(got) == 2
    assert {k: got[0][k] for k in ("level", "logger", "message")} == {
        "level": "INFO",
        "logger": "alerter.test",
        "message": "hello world",
    }
    assert got[0]["time"].endswith("Z")
    assert got[0]["time"][:2] == "20"
    assert "exc_info" not in got[0]
    assert got[1]["level"] == "ERROR"
    assert got[1]["message"] == "it failed"
    assert got[1]["exc_info"].startswith("Traceback (most recent call last)")
    assert got[1]["exc_info"].endswith("RuntimeError: boom")


def test_json_under_journald_is_prefixed_json(
    stderr: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, stderr)
    journal_stream(monkeypatch, stderr)
    setup_logging("INFO", "json")
    logging.getLogger("alerter.test").warning("careful")
    (line,) = lines(stderr)
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["message"] == "careful"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_multi_line_message_and_a_traceback_stay_one_journal_entry(
    stderr: TextIO, monkeypatch: pytest.MonkeyPatch, fmt: logs.Format
) -> None:
    use(monkeypatch, stderr)
    journal_stream(monkeypatch, stderr)
    setup_logging("INFO", fmt)
    log = logging.getLogger("alerter.test")
    log.error("reload rejected:\nrules.yml:3: bad\nrules.yml:9: worse")
    try:
        fail("line one\nline two")
    except RuntimeError:
        log.exception("unexpected")
    got = lines(stderr)
    assert len(got) == 2, got
    assert all(line.startswith("<3>") for line in got)
    if fmt == "text":
        assert (
            got[0]
            == "<3>ERROR alerter.test: reload rejected: ⏎ rules.yml:3: bad ⏎ rules.yml:9: worse"
        )
        assert " ⏎ Traceback (most recent call last): ⏎ " in got[1]
        assert got[1].endswith("RuntimeError: line one ⏎ line two")
    else:
        first, second = (json.loads(line[3:]) for line in got)
        assert first["message"] == "reload rejected:\nrules.yml:3: bad\nrules.yml:9: worse"
        assert second["exc_info"].endswith("RuntimeError: line one\nline two")


def test_a_terminal_keeps_line_breaks(stderr: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, stderr)
    setup_logging("INFO")
    logging.getLogger("alerter.test").error("a\nb")
    assert lines(stderr)[1] == "b"


def test_json_is_masked_before_it_is_formatted(
    stderr: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, stderr)
    masking.register(SECRET)
    setup_logging("INFO", "json")
    log = logging.getLogger("alerter.test")
    log.warning("token %s and JSON-escaped %s", SECRET, json.dumps({"t": SECRET}))
    try:
        fail(f"cannot use {SECRET}")
    except RuntimeError:
        log.exception("with %s", SECRET[:10])
    log.warning("stack", stack_info=True)
    text = "\n".join(lines(stderr))
    assert SECRET[:6] not in text
    got = [json.loads(line) for line in text.splitlines()]
    assert got[0]["message"].startswith("token *** and JSON-escaped")
    assert got[1]["message"] == "with ***"
    assert got[1]["exc_info"].endswith("RuntimeError: cannot use ***")
    assert got[2]["stack_info"].startswith("Stack (most recent call last)")


def test_every_handler_masks(stderr: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, stderr)
    setup_logging("INFO", "json")
    assert all(
        any(isinstance(f, masking.MaskingFilter) for f in h.filters)
        for h in logging.getLogger().handlers
    )


def test_the_version_option_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from alerter import __version__  # noqa: PLC0415
    from alerter.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"spot-alerter {__version__}"
