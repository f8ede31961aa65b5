"""`alerter backup`: SQLite's online backup of the state while another connection writes
(as the running service does), checked, private, and never over an existing file."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from alerter.cli import main
from alerter.errors import StoreError
from alerter.models import Message
from alerter.store import SCHEMA_VERSION, Store

FEED_ID = "0onlBACKUPtestFEEDid0000000000001"
T0 = 1_700_000_000


def msg(id: int) -> Message:
    return Message(id, "0-1", "Anna", T0 + id, "TRACK", 46.5, 7.9, content="x" * 200)


class Writer:
    """The running service, as far as the database sees it: its own connection, one
    committed transaction after another (a message and its device row together)."""

    def __init__(self, path: Path, first: int) -> None:
        self.store = Store.open(path)
        self.next = first
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write, name="writer", daemon=True)

    def _write(self) -> None:
        try:
            while not self.stop.is_set():
                self.store.insert_messages(
                    FEED_ID, [msg(self.next + i) for i in range(20)], T0, initial=False
                )
                self.next += 20
                self.batches += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> Writer:
        self.thread.start()
        while self.batches < 3 and self.thread.is_alive():
            self.stop.wait(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.store.close()
        assert self.error is None, self.error


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A state database holding 500 messages."""
    path = tmp_path / "state" / "alerter.db"
    store = Store.open(path)
    store.insert_messages(FEED_ID, [msg(i) for i in range(1, 501)], T0, initial=False)
    store.close()
    return path


def check_copy(path: Path) -> int:
    """The copy opens on its own, passes its checks and is one consistent snapshot;
    returns how many messages it holds."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
        count, newest = conn.execute("SELECT COUNT(*), MAX(id) FROM messages").fetchone()
        # A snapshot: the device row was written with the newest message, in one commit.
        [last] = conn.execute("SELECT last_message_id FROM devices").fetchone()
        assert last == newest
        assert count == newest  # ids 1..n, no batch half copied
    finally:
        conn.close()
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)) == [
        path.name
    ]  # no -wal or -journal to carry along
    return int(count)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_backup_while_another_connection_writes(db: Path, tmp_path: Path) -> None:
    store = Store.open(db)
    try:
        with Writer(db, first=501) as writer:
            counts = []
            for n in range(5):
                copy = tmp_path / f"copy{n}.db"
                size, integrity, version = store.backup(copy)
                assert (integrity, version) == ("ok", SCHEMA_VERSION)
                assert size == copy.stat().st_size > 0
                assert mode(copy) == 0o600
                counts.append(check_copy(copy))
        assert counts[0] >= 500 + 3 * 20
        assert counts == sorted(counts)
        assert counts[-1] > counts[0]  # the service wrote on between the copies
        assert writer.batches > 3
    finally:
        store.close()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_backup_refuses_to_overwrite_unless_told(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    target.write_bytes(b"precious")
    store = Store.open(db)
    try:
        with pytest.raises(StoreError, match="exists"):
            store.backup(target)
        assert target.read_bytes() == b"precious"
        store.backup(target, replace=True)
        assert check_copy(target) == 500
        assert mode(target) == 0o600
    finally:
        store.close()


def test_backup_refuses_the_live_database(db: Path) -> None:
    store = Store.open(db)
    try:
        for target in (db, db.parent / "alerter.db-wal", db.parent / ".." / "state" / db.name):
            with pytest.raises(StoreError, match="the state database itself"):
                store.backup(target, replace=True)
        assert sum(store.message_counts().values()) == 500
    finally:
        store.close()


def test_backup_to_a_missing_directory_is_a_store_error(db: Path, tmp_path: Path) -> None:
    store = Store.open(db)
    try:
        with pytest.raises(StoreError, match=r"backup to .* failed"):
            store.backup(tmp_path / "nowhere" / "backup.db")
    finally:
        store.close()


# -- the command ------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings in the environment, pointing at the state database `db`."""
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALERTER_FEEDS", json.dumps([{"id": FEED_ID, "name": "Club"}]))
    monkeypatch.setenv("ALERTER_STATE_DIR", str(db.parent))
    return tmp_path


def test_backup_command_while_the_service_writes(
    env: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = env / "backups" / "alerter-copy.db"
    target.parent.mkdir()
    # The service holds the state lock; backup does not need it.
    lock = os.open(db.parent / "alerter.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with Writer(db, first=501):
            code = main(["backup", str(target)])
    finally:
        os.close(lock)

    out, err = capsys.readouterr()
    assert code == 0, err
    size = target.stat().st_size
    assert out.splitlines() == [
        f"backup: {target} ({size} bytes)",
        f"checked: integrity_check ok, schema version {SCHEMA_VERSION}",
    ]
    assert mode(target) == 0o600
    assert check_copy(target) >= 560


def test_backup_command_refuses_to_overwrite(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = env / "backup.db"
    target.write_bytes(b"precious")

    assert main(["backup", str(target)]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert "exists; --force replaces it" in err
    assert target.read_bytes() == b"precious"

    assert main(["backup", "--force", str(target)]) == 0
    assert check_copy(target) == 500
    assert mode(target) == 0o600


def test_backup_command_refuses_a_directory(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", "--force", str(env)]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_backup_command_without_state(
    env: Path, db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTER_STATE_DIR", str(env / "none"))
    assert main(["backup", str(env / "b.db")]) == 1
    assert "no state yet" in capsys.readouterr().err
    assert not (env / "b.db").exists()
    assert not (env / "none").exists()
