"""The deployment files: the systemd unit under `systemd-analyze`, the image's HEALTHCHECK
against the service's real /healthz, and what the Dockerfile and compose.yml promise.

`systemd-analyze` runs where it exists; where it is missing or cannot run, those tests
are skipped with the reason. Docker itself is not needed: the HEALTHCHECK's command is
read out of deploy/Dockerfile the way Docker reads it (continuation lines joined, the
exec form's JSON) and run with this Python against a real `WebServer`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from alerter import metrics
from alerter.clock import SystemClock
from alerter.models import AdminKind
from alerter.service import STOP_GRACE
from alerter.settings import load_settings, unquote
from alerter.store import Store
from alerter.vitals import Health
from alerter.web import WebServer, parse_listen

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "alerter.service"
#: The name the unit is installed under (deploy/README.md).
UNIT_NAME = "spot-alerter.service"
#: The most `systemd-analyze security` may rate the unit (0 safest, 10 most exposed).
MAX_EXPOSURE = 1.1
#: What `systemd-analyze` prints when it cannot work here at all (not a fault of the unit).
CANNOT_RUN = (
    "unrecognized option",
    "Unknown option",
    "invalid option",
    "Failed to initialize manager",
    "Failed to start manager",
    "Failed to allocate manager",
)


# -- systemd-analyze ----------------------------------------------------------------------


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze ARGS` in `cwd`; skips the test when it is missing or cannot run."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (not on PATH)")
    try:
        proc = subprocess.run(
            [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"systemd-analyze cannot run here: {exc}")
    if proc.returncode != 0 and any(m in proc.stderr for m in CANNOT_RUN):
        pytest.skip(
            f"systemd-analyze {args[0]} cannot run here: {proc.stderr.strip().splitlines()[-1]}"
        )
    return proc


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit as installed, but starting /bin/true: /opt/spot-alerter/.venv does not
    exist here, and `verify` checks that ExecStart's program is executable."""
    true = Path("/bin/true")
    if not os.access(true, os.X_OK):
        pytest.skip("/bin/true does not exist here")
    text = UNIT.read_text(encoding="utf-8")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    assert len(starts) == 1, "the unit has exactly one ExecStart="
    assert lines[starts[0]] == "ExecStart=/opt/spot-alerter/.venv/bin/alerter run"
    lines[starts[0]] = f"ExecStart={true}"
    copy = tmp_path / UNIT_NAME
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return copy


def test_the_unit_verifies_without_a_warning(unit_copy: Path) -> None:
    proc = systemd_analyze("verify", f"./{unit_copy.name}", cwd=unit_copy.parent)

    about_the_unit = [line for line in proc.stderr.splitlines() if UNIT_NAME in line]
    assert proc.returncode == 0, proc.stderr
    # systemd-analyze verify exits 0 on an unknown key or a bad value ("ignoring"): only
    # its warnings show them.
    assert about_the_unit == []


def test_the_unit_verify_catches_a_typo(unit_copy: Path) -> None:
    """The check above can fail: a misspelt key is reported (so an empty report means
    something)."""
    text = unit_copy.read_text(encoding="utf-8")
    unit_copy.write_text(text.replace("WatchdogSec=", "WatchdogSecs="), encoding="utf-8")

    proc = systemd_analyze("verify", f"./{unit_copy.name}", cwd=unit_copy.parent)

    assert "WatchdogSecs" in proc.stderr


def test_the_units_exposure_is_at_most_1_1(unit_copy: Path) -> None:
    proc = systemd_analyze(
        "security", "--offline=true", f"./{unit_copy.name}", cwd=unit_copy.parent
    )

    assert proc.returncode == 0, proc.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert found is not None, proc.stdout
    exposure = float(found.group(1))
    print(f"systemd-analyze security --offline=true {UNIT_NAME}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, proc.stdout


# -- the Dockerfile, as Docker reads it ----------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comment lines dropped, lines ending in `\\`
    joined with the next (Docker's default escape character)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((DEPLOY / "Dockerfile").read_text(encoding="utf-8"))


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Every `ENV NAME=value` (the `NAME=value NAME=value` form only)."""
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for pair in rest.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


@dataclass(frozen=True)
class Healthcheck:
    options: dict[str, str]
    command: list[str]  # the exec form, without the CMD


def healthcheck() -> Healthcheck:
    found = [rest for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    assert len(found) == 1, "one HEALTHCHECK"
    options: dict[str, str] = {}
    rest = found[0]
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    kind, _, form = rest.partition(" ")
    assert kind == "CMD"
    command = json.loads(form)  # the exec form: Docker decodes it as JSON too
    assert isinstance(command, list)
    assert all(isinstance(part, str) for part in command)
    return Healthcheck(options, command)


def test_the_image_listens_on_every_interface_inside_and_checks_its_health() -> None:
    instructions = dockerfile()
    env = env_values(instructions)

    assert parse_listen(env["ALERTER_HTTP_LISTEN"]) == ("0.0.0.0", 8787)
    assert env["ALERTER_STATE_DIR"] == "/data"
    assert ("EXPOSE", "8787") in instructions
    assert ("USER", "alerter") in instructions
    check = healthcheck()
    assert check.command[0] == "python"  # the image's, no curl in the slim image
    assert check.options == {
        "interval": "60s",
        "timeout": "10s",
        "start-period": "30s",
        "retries": "3",
    }
    copied = [rest for keyword, rest in instructions if keyword == "COPY"]
    assert not any(rest.split()[0] == "." for rest in copied), "never COPY . ."


def test_the_compose_file_publishes_on_the_loopback_only_and_keeps_the_state() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text(encoding="utf-8"))
    service = compose["services"]["alerter"]

    assert service["ports"] == ["127.0.0.1:8787:8787"]
    assert service["environment"]["ALERTER_HTTP_LISTEN"] == "0.0.0.0:8787"
    assert service["environment"]["ALERTER_STATE_DIR"] == "/data"
    assert "state:/data" in service["volumes"]
    assert "state" in compose["volumes"]
    grace = service["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace[:-1]) > STOP_GRACE  # sends in flight get STOP_GRACE after SIGTERM
    # No `test:`: the image's HEALTHCHECK command, with the same timings.
    check = healthcheck()
    assert "test" not in service["healthcheck"]
    assert {k.replace("_", "-"): str(v) for k, v in service["healthcheck"].items()} == check.options


# -- the HEALTHCHECK's command against the service's /healthz ----------------------------


@dataclass
class Verdict:
    """What the served /healthz says (the test sets it)."""

    health: Health

    def __call__(self) -> Health:
        return self.health


HEALTHY = Health(healthy=True, blind=False, reasons=())
BLIND = Health(healthy=False, blind=True, reasons=("every feed is failing: Club (blocked)",))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "alerter.db")
    yield s
    s.close()


@pytest.fixture
async def served(tmp_path: Path, store: Store) -> AsyncIterator[tuple[int, Verdict]]:
    """The service's web server on a free loopback port: (port, its verdict)."""
    verdict = Verdict(HEALTHY)
    settings = load_settings(env_file=None, state_dir=tmp_path, http_listen="127.0.0.1:0")
    server = WebServer(settings, store, SystemClock(), verdict, registry=CollectorRegistry())
    async with server.serving():
        assert server.port is not None
        yield server.port, verdict


async def run_healthcheck(listen: str | None) -> tuple[int, str, str]:
    """The image's HEALTHCHECK command, with this Python, ALERTER_HTTP_LISTEN=`listen`
    (unset when None): (exit code, stdout, stderr)."""
    command = healthcheck().command
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    if listen is not None:
        env["ALERTER_HTTP_LISTEN"] = listen
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_healthcheck_passes_while_healthz_says_200(
    served: tuple[int, Verdict],
) -> None:
    port, _ = served

    code, out, err = await run_healthcheck(f"0.0.0.0:{port}")

    assert (code, err) == (0, "")
    status, _, body = out.partition(" ")
    assert status == "200"
    assert json.loads(body)["status"] == "ok"


async def test_the_healthcheck_fails_with_the_reasons_while_healthz_says_503(
    served: tuple[int, Verdict],
) -> None:
    port, verdict = served
    verdict.health = BLIND

    code, out, err = await run_healthcheck(f"0.0.0.0:{port}")

    assert (code, out) == (1, "")
    status, _, body = err.strip().partition(" ")
    assert status == "503"
    assert json.loads(body)["reasons"] == ["every feed is failing: Club (blocked)"]


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:{port}",
        "'0.0.0.0:{port}'",  # `docker run --env-file` keeps the quotes of .env
        '"0.0.0.0:{port}"',
        " 0.0.0.0:{port} ",
        "localhost:{port}",
    ],
)
async def test_the_healthcheck_reads_the_address_as_the_service_does(
    served: tuple[int, Verdict], listen: str
) -> None:
    port, _ = served

    code, _, err = await run_healthcheck(listen.format(port=port))

    assert (code, err) == (0, "")


async def test_the_healthcheck_fails_when_nothing_answers() -> None:
    port = _closed_port()

    code, out, err = await run_healthcheck(f"0.0.0.0:{port}")

    assert (code, out) == (1, "")
    assert err.startswith(f"no answer from http://127.0.0.1:{port}/healthz: ")


@pytest.mark.parametrize(
    ("listen", "asked"),
    [
        ("0.0.0.0:8787", "http://127.0.0.1:8787/healthz"),
        ("127.0.0.1:9000", "http://127.0.0.1:9000/healthz"),
        ("'0.0.0.0:8787'", "http://127.0.0.1:8787/healthz"),
        ('"0.0.0.0:8787"', "http://127.0.0.1:8787/healthz"),
        ("[::]:8787", "http://[::1]:8787/healthz"),
        ("[::1]:8787", "http://[::1]:8787/healthz"),
        ("localhost:8787", "http://localhost:8787/healthz"),
        (None, "http://127.0.0.1:8787/healthz"),  # the service's default
        ("", "http://127.0.0.1:8787/healthz"),  # empty is unset, as for the service
    ],
)
def test_the_healthcheck_asks_where_the_service_listens(
    monkeypatch: pytest.MonkeyPatch, listen: str | None, asked: str
) -> None:
    """The script as `python -c` runs it, with urlopen recording the URL (no network)."""
    if listen is None:
        monkeypatch.delenv("ALERTER_HTTP_LISTEN", raising=False)
    else:
        monkeypatch.setenv("ALERTER_HTTP_LISTEN", listen)
        if listen:
            _, port = parse_listen(unquote(listen)) or ("", 0)  # as the service reads it
            assert asked.endswith(f":{port}/healthz")
    urls: list[str] = []

    def urlopen(url: str, timeout: float) -> None:
        urls.append(url)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    command = healthcheck().command
    assert command[:2] == ["python", "-c"]
    monkeypatch.setattr(sys, "argv", ["-c", *command[3:]])

    with pytest.raises(SystemExit) as exited:
        exec(command[2], {"__name__": "__main__"})

    assert urls == [asked]
    assert str(exited.value.code).startswith(f"no answer from {asked}: ")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the documents say what the code does --------------------------------------------------


def docs() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8") + (DEPLOY / "README.md").read_text(
        encoding="utf-8"
    )


def metric_names() -> dict[str, str]:
    """Every metric family the service exposes, as scraped: name -> type."""
    families = {family.name: family.type for family in metrics.REGISTRY.collect()}
    for family in metrics.state_families(metrics.StateReading(healthy=True, blind=False)):
        families[family.name] = family.type
    return families


def test_the_operations_guide_names_every_metric_and_admin_notice() -> None:
    text = docs()
    guide = (DEPLOY / "README.md").read_text(encoding="utf-8")

    for name, kind in metric_names().items():
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"| `{exposed}` | {kind} |" in guide, exposed
    for kind in AdminKind:
        assert f"`{kind.value}`" in guide, kind.value
    for command in ("run", "check", "test-notify", "demo", "replay", "status", "export", "backup"):
        assert f"`alerter {command}" in text, command
