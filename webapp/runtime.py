"""The server process's shared state, one per `streamlit run app.py`: which adapter to load, the model loader
every session shares (loading in a background thread from the server's start-up hook), the work queues (heavy
work such as an explanation, reading or scoring a file, one at a time; single predictions a few at a time), each
with a share per client, handing freed memory back to the operating system, the readiness endpoint and the
page's log of unexpected errors.

Imports without PyTorch (inference.predictor is imported where it is used) and without Streamlit: the page
imports this module on every visit, and while the model loads in the background the page must not wait for
torch's import to be drawn.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.failures import write_traceback
from training.paths import DEFAULT_MODEL_DIR
from webapp.render import display_path

if TYPE_CHECKING:  # imported where used: importing torch takes seconds, and the page must not wait for it
    from inference.predictor import Predictor

MODEL_DIR_ENV = "SENTIMENT_MODEL_DIR"
# Heavy work (an explanation, reading or scoring a file) holds a CPU for up to minutes and 1-2 GB: at most this
# many run at once, across all sessions; others wait in line up to HEAVY_WAIT_S, then are asked to retry.
HEAVY_SLOTS_ENV = "SENTIMENT_HEAVY_SLOTS"
HEAVY_WAIT_ENV = "SENTIMENT_HEAVY_WAIT_S"
# A client (one address, or one session on this machine) holds or waits for at most this many heavy jobs: with
# several tabs open it still takes its turn, and cannot fill the line while others wait.
HEAVY_PER_CLIENT = 1
# Single predictions (tens of milliseconds) have a lane of their own: behind a minute-long explanation in the heavy
# line, every typed review and every click (the page predicts on each rerun) would wait, and the page would be
# unusable. This lane bounds how many run at once and how long one waits.
LIGHT_SLOTS = 4
LIGHT_PER_CLIENT = 2
LIGHT_WAIT_S = 10.0
# Explanations in the app take their gradients 4,096 tokens a pass (the library's default is 8,192): every
# session shares this one process, so half the working memory is worth a slightly slower explanation.
EXPLAIN_TOKENS_PER_PASS = 4096
READY_PATH = "/api/ready"
LOGGER = logging.getLogger("sentiment_app")


def model_dir_from_env() -> str:
    """The adapter folder to load: $SENTIMENT_MODEL_DIR if set, else the shipped trained_model/."""
    return os.environ.get(MODEL_DIR_ENV) or str(DEFAULT_MODEL_DIR)


def log_unexpected(what: str, error: BaseException) -> str:
    """The traceback to a log file and the server's log; returns a reference for the visitor (the log file's
    name), who sees one line with it and no server paths or exception text."""
    log = write_traceback(what, error)
    reference = log.stem if log is not None else f"{what}-{uuid.uuid4().hex[:8]}"
    LOGGER.error("%s failed [%s]: %s: %s (traceback in %s)", what, reference, type(error).__name__, error, log)
    return reference


def client_key(address: str | None, session: str) -> str:
    """Who a job is for, as the work queues count shares: the connection's address, or the session when there is
    none (Streamlit gives none for this machine, so behind a proxy on it each session is a client of its own)."""
    return f"address {address}" if address else f"session {session}"


# ----------------------------------------------------------------------------- the work queues


class Busy(RuntimeError):
    """No slot for heavy work came free in time; the message says so and asks to retry."""

    def __init__(self, position: int, waited_s: float, what: str):
        super().__init__(
            f"The server is busy: {what} waited {waited_s:.0f} s in line (position {position}) without a free slot. "
            "Try again in a minute."
        )
        self.position = position


class ClientBusy(Busy):
    """This client already has its share of jobs running or waiting (in this tab or another)."""

    def __init__(self, what: str):
        RuntimeError.__init__(
            self,
            f"You already have a job running or waiting on this server (in this tab or another): {what} can start "
            "once it is done. Try again then.",
        )
        self.position = 0


class WorkQueue:
    """At most `slots` jobs at once across every session; the others wait in arrival order.

    A waiter hears its position (1 = next) through `on_wait` about every `poll_s`, and gives up with Busy after
    `wait_s`: never an endless hang. A `client` holds or waits for at most `per_client` jobs; one more is refused
    at once with ClientBusy, so one visitor with many tabs cannot fill the line, and waits its turn behind those
    who came first. `trim`: hand freed memory back before and after each job (heavy jobs free their gigabyte;
    a prediction's milliseconds are not worth a trim). One instance per lane per server process (HEAVY_WORK,
    LIGHT_WORK), shared by all sessions.
    """

    def __init__(
        self,
        slots: int = 1,
        wait_s: float = 30.0,
        poll_s: float = 0.5,
        per_client: int = HEAVY_PER_CLIENT,
        trim: bool = True,
    ):
        if slots < 1 or per_client < 1:
            raise ValueError(f"a work queue needs at least one slot and one job per client, not {slots}, {per_client}")
        self.slots, self.wait_s, self.poll_s, self.per_client, self.trim = slots, wait_s, poll_s, per_client, trim
        self._condition = threading.Condition()
        self._running = 0
        self._line: list[object] = []
        self._jobs: collections.Counter = collections.Counter()  # per client: jobs running or waiting

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._line)

    def jobs(self, client: str) -> int:
        """How many jobs `client` has running or waiting."""
        return self._jobs[client]

    @contextlib.contextmanager
    def slot(
        self, what: str = "this job", on_wait: Callable[[int], None] | None = None, client: str | None = None
    ) -> Iterator[None]:
        ticket = object()
        with self._condition:
            if client is not None and self._jobs[client] >= self.per_client:
                raise ClientBusy(what)
            if client is not None:
                self._jobs[client] += 1
            self._line.append(ticket)
        try:
            with self._turn(ticket, what, on_wait):
                yield
        finally:
            if client is not None:
                with self._condition:
                    self._jobs[client] -= 1
                    if self._jobs[client] <= 0:
                        del self._jobs[client]

    @contextlib.contextmanager
    def _turn(self, ticket: object, what: str, on_wait: Callable[[int], None] | None) -> Iterator[None]:
        """Wait in line with `ticket` (already in it) for a free slot, then hold it while the block runs."""
        started = time.monotonic()
        try:
            while True:
                with self._condition:
                    if self._running < self.slots and self._line[0] is ticket:
                        self._line.pop(0)
                        self._running += 1
                        self._condition.notify_all()
                        break
                    position = self._line.index(ticket) + 1
                    waited = time.monotonic() - started
                    if waited >= self.wait_s:
                        raise Busy(position, waited, what)
                    self._condition.wait(min(self.poll_s, self.wait_s - waited))
                if on_wait is not None:  # outside the lock: it may draw on the page
                    on_wait(position)
        except BaseException:
            with self._condition:
                if ticket in self._line:
                    self._line.remove(ticket)
                self._condition.notify_all()
            raise
        if self.trim:
            release_freed_memory()  # what other sessions freed, before this job takes its gigabyte: a lower peak
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()
            if self.trim:
                release_freed_memory()


def heavy_work_queue() -> WorkQueue:
    """The queue from the environment: $SENTIMENT_HEAVY_SLOTS jobs at once (default 1: one CPU-bound job
    already uses every core), waiting up to $SENTIMENT_HEAVY_WAIT_S seconds (default 30)."""
    slots = int(os.environ.get(HEAVY_SLOTS_ENV) or 1)
    wait_s = float(os.environ.get(HEAVY_WAIT_ENV) or 30)
    return WorkQueue(max(slots, 1), max(wait_s, 0.0))


HEAVY_WORK = heavy_work_queue()
LIGHT_WORK = WorkQueue(LIGHT_SLOTS, LIGHT_WAIT_S, poll_s=0.1, per_client=LIGHT_PER_CLIENT, trim=False)


# ----------------------------------------------------------------------------- handing memory back


def release_freed_memory() -> bool:
    """Hand memory that heavy work freed back to the operating system (glibc's malloc_trim; Linux only).

    Each session's page runs on its own thread, and glibc keeps what a thread freed in that thread's arena, so
    without a trim every explanation's working memory stayed resident for good (the measurements: docs/faults.md,
    "memory kept by each explanation"). Trimming before and after each heavy job, and every TRIM_EVERY_S seconds
    (typing and uploads run on many threads too), is cheap. Returns whether a trim ran."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
    except (OSError, AttributeError):  # not glibc (musl, say): nothing to trim
        return False


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on (Linux only); returns whether it took.

    Streamlit runs each session's page on a thread of its own, and glibc gives busy threads arenas of their own,
    whose freed memory stays resident after the sessions end; two arenas keep that slack small at no cost
    measurable in the load test (docs/reliability.md). The server calls this once, as it starts."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc: its own allocator decides
        return False


TRIM_EVERY_S = 10.0
_TRIMMER: threading.Thread | None = None


def _trim_periodically() -> None:
    while True:
        time.sleep(TRIM_EVERY_S)
        release_freed_memory()


def start_trimmer() -> None:
    """One daemon thread per server that hands freed memory back every TRIM_EVERY_S seconds (Linux)."""
    global _TRIMMER
    if _TRIMMER is None and sys.platform.startswith("linux"):
        _TRIMMER = threading.Thread(target=_trim_periodically, name="malloc-trim", daemon=True)
        _TRIMMER.start()


# ----------------------------------------------------------------------------- the model, loaded once per server


WARM_UP_REVIEW = "A warm-up review: the first prediction sets up the thread pools and buffers every later one uses."


def load_and_warm_up(model_dir: str) -> Predictor:
    """Predictor.from_pretrained, then one prediction: the first pass through a freshly loaded model is several
    times slower than the next, and "ready" should mean a visitor's first review is answered at full speed."""
    from inference.predictor import Predictor

    predictor = Predictor.from_pretrained(model_dir)
    predictor.predict_one(WARM_UP_REVIEW)
    return predictor


class ModelLoader:
    """Loads a Predictor in a background thread, so the page can be drawn and used while the model loads.

    `state` is "loading", "ready" or "failed"; `retry()` starts a new attempt after a failure (a fix on disk).
    """

    def __init__(self, model_dir: str, load: Callable[[str], Predictor] | None = None):
        self.model_dir = model_dir
        self._load = load or load_and_warm_up
        self._lock = threading.Lock()
        self.predictor: Predictor | None = None
        self.error: BaseException | None = None
        self.started = self.finished = 0.0
        self._thread: threading.Thread | None = None
        self._reference: str | None = None
        self.start()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.error, self._reference, self.started, self.finished = None, None, time.monotonic(), 0.0
            self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            predictor = self._load(self.model_dir)
        except BaseException as error:  # kept and shown by the page; an unexpected one is logged there
            self.error = error
        else:
            self.predictor = predictor
        self.finished = time.monotonic()

    @property
    def state(self) -> str:
        if self.predictor is not None:
            return "ready"
        if self.error is not None and self._thread is not None and not self._thread.is_alive():
            return "failed"
        return "loading"

    def wait(self, timeout_s: float) -> str:
        """The state after at most `timeout_s` seconds of waiting for the load to finish."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self.state

    def retry(self) -> None:
        if self.state == "failed":
            self.start()

    def failure_notice(self) -> str:
        """What a visitor is shown for a failed load: a reference, no paths or exception text. The error and its
        traceback are logged (log_unexpected) once per failed attempt, however many pages show the notice."""
        with self._lock:
            if self._reference is None:
                self._reference = log_unexpected("model loading", self.error)
        return (
            f"The model could not be loaded (reference {self._reference}); the details are in the server's log. "
            "Reload the page to try again."
        )

    def readiness(self) -> dict:
        """What the readiness endpoint answers: the state, seconds since the load started (or how long it took),
        and for a failure the error's type (no message: it can name server paths)."""
        seconds = (self.finished or time.monotonic()) - self.started
        shown = display_path(self.model_dir)  # relative to the project; only the folder's name when outside it
        shown = shown if not Path(shown).is_absolute() else Path(shown).name
        answer = {"state": self.state, "model_dir": shown, "seconds": round(seconds, 2)}
        if answer["state"] == "failed":
            answer["error"] = type(self.error).__name__
        return answer


_LOADERS: dict[str, ModelLoader] = {}
_LOADERS_LOCK = threading.Lock()


def model_loader(model_dir: str | None = None) -> ModelLoader:
    """The one ModelLoader per adapter folder in this process, shared by every session (and by the server's
    start-up hook, which calls this as `streamlit run` starts, so the model loads before the first visitor).

    Created, and its background load started, on the first call; a failed load is retried by the caller
    (the page retries on every visit or click)."""
    model_dir = model_dir or model_dir_from_env()
    with _LOADERS_LOCK:
        loader = _LOADERS.get(model_dir)
        if loader is None:
            loader = _LOADERS[model_dir] = ModelLoader(model_dir)
            start_trimmer()
        return loader


# ----------------------------------------------------------------------------- the server's hooks (app.py's st.App)


@contextlib.asynccontextmanager
async def server_lifespan(_app):
    """Runs as the server starts, before it answers: starts loading the model in a background thread and returns
    at once, so the health check and the page come within a second or two while the model loads."""
    limit_malloc_arenas()
    model_loader(model_dir_from_env())
    yield


async def ready_endpoint(_request):
    """GET /api/ready: 200 and {"state": "ready", ...} once the model answers; 503 while it loads or if it failed."""
    from starlette.responses import JSONResponse

    answer = model_loader(model_dir_from_env()).readiness()
    return JSONResponse(answer, status_code=200 if answer["state"] == "ready" else 503)


class AllowedHostsOnly:
    """ASGI middleware: an HTTP request whose Host header is not in `server.allowedHosts` gets 421.

    Streamlit checks the Host of its WebSocket and agent routes only; without this, a page that rebinds its
    name to 127.0.0.1 (DNS rebinding) could still read `/`, the health check and `/api/ready`. The check is
    Streamlit's own (`is_host_allowed`, which also handles "[::1]:port"), imported on the first request so
    this module stays Streamlit-free."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            from starlette.datastructures import Headers
            from starlette.responses import PlainTextResponse
            from streamlit.web.server.starlette.starlette_websocket import is_host_allowed

            if not is_host_allowed(Headers(scope=scope).get("host")):
                refusal = PlainTextResponse("This server answers only to the names it was started for.", 421)
                return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)
