"""Start the app as a user does (`streamlit run app.py`) on a free loopback port, wait until it is healthy,
and stop it cleanly: the one copy the browser tests, the benchmark and the load test share.

    with running_app(env={"SENTIMENT_MODEL_DIR": "my_adapter"}) as app:
        urllib.request.urlopen(app.url)

Needs nothing from Streamlit itself: the server runs in its own process. A harness for tests, the benchmark
and scripts/load_test.py, not a part of the app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from training.paths import PROJECT_ROOT

HOST = "127.0.0.1"  # loopback only: nothing leaves this machine
HEALTH_PATH = "/_stcore/health"


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def health_check(url: str, timeout: float = 5.0) -> tuple[bool, float]:
    """Whether the server at `url` answers its health check with "ok", and how many seconds that took."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{url}{HEALTH_PATH}", timeout=timeout) as response:
            ok = response.status == 200 and response.read().decode().strip() == "ok"
    except OSError:
        ok = False
    return ok, time.perf_counter() - started


def app_command(port: int, host: str = HOST, args: Sequence[str] = ()) -> list[str]:
    """`streamlit run app.py` headless on host:port, with Streamlit's usage statistics off, plus `args`."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--browser.gatherUsageStats",
        "false",
        *args,
    ]


def server_environment(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment, offline for the hub, with `env` applied (a None value removes the name)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


@dataclasses.dataclass
class AppServer:
    """A started `streamlit run app.py` process, in its own process group."""

    process: subprocess.Popen
    port: int
    host: str
    started: float  # time.monotonic() just before the process was started
    log: Path  # the server's stdout and stderr

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def elapsed_s(self) -> float:
        """Seconds since the server process was started."""
        return time.monotonic() - self.started

    def health(self, timeout: float = 5.0) -> tuple[bool, float]:
        return health_check(self.url, timeout)

    def log_tail(self, characters: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def wait_until_healthy(self, timeout_s: float = 60, interval_s: float = 0.1) -> None:
        """Return once the health check says "ok"; raise if the server exits first or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with code {self.process.returncode} before it was healthy; "
                    f"its log ends:\n{self.log_tail()}"
                )
            if self.health(timeout=2)[0]:
                return
            time.sleep(interval_s)
        raise TimeoutError(f"{self.url}{HEALTH_PATH} did not answer 'ok' within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM to the server's process group, SIGKILL if it is still there after `timeout_s`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_app(
    env: Mapping[str, str | None] | None = None,
    args: Sequence[str] = (),
    log: str | Path | None = None,
    host: str = HOST,
    port: int | None = None,
) -> AppServer:
    """Start `streamlit run app.py` from the project folder; does not wait for it (see AppServer.wait_until_healthy).

    `env` is applied over this process's environment (None removes a name), `args` are extra Streamlit
    options, and the server's output goes to `log` (default: a new temporary file)."""
    port = port or free_port(host)
    if log is None:
        handle, log = tempfile.mkstemp(prefix="streamlit_", suffix=".log")
        os.close(handle)
    log = Path(log)
    with log.open("w") as output:
        started = time.monotonic()
        process = subprocess.Popen(
            app_command(port, host, args),
            cwd=PROJECT_ROOT,
            env=server_environment(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() reaches any children
        )
    return AppServer(process, port, host, started, log)


@contextlib.contextmanager
def running_app(
    env: Mapping[str, str | None] | None = None,
    args: Sequence[str] = (),
    log: str | Path | None = None,
    startup_timeout_s: float = 60,
    stop_timeout_s: float = 10,
) -> Iterator[AppServer]:
    """start_app, then wait until healthy; the server is stopped on leaving, however the block ends."""
    server = start_app(env, args, log)
    try:
        server.wait_until_healthy(startup_timeout_s)
        yield server
    finally:
        server.stop(stop_timeout_s)
        if log is None:
            server.log.unlink(missing_ok=True)
