"""A bounded load test of the running app, on loopback only.

    python scripts/load_test.py                       # 20 sessions x 3 predictions, 6 rounds
    python scripts/load_test.py --sessions 5 --rounds 1 --predictions 2   # a quick look
    python scripts/load_test.py --mixed --rounds 2 --predictions 2 --output results/load_test_mixed.json
                                                      # issue 15's run: 20 mixed sessions + the hostile ones

--mixed: each session types --predictions IMDb reviews, asks why for the last one (cut to 600 characters),
and uploads a CSV of --upload-rows reviews and clicks Score, in one of three orders; all --sessions at once,
together with the hostile sessions (--hostile of each): the Parquet bomb upload (as tests/test_safety.py
builds it), one 200 MB websocket message, and a 10 MB one-line review typed into the box and uploaded as a
.txt file. Every request is counted as answered (a label, a highlighted review, a scored table), refused
with a message (the page's warning or error naming the limit or the busy queue; a websocket closed with
1009 "message too big") or an error (anything else). Tracebacks are counted on the pages (exception
elements), in the server's output and as the app's log files (SENTIMENT_LOG_DIR, a fresh folder). Memory:
"before" is the settled RSS after a warm-up session (the first explanation loads a full-precision copy of
the model, kept), "after" the settled RSS after the last round, the peak the larger of the sampled peak
and the kernel's high-water mark (VmHWM). Passes with zero errors and tracebacks, every request answered
or refused, the peak under --max-peak-mb (2 GB) and after within --max-growth (10%) of before.

Starts `streamlit run app.py` on a free 127.0.0.1 port and, in each round, opens --sessions new
sessions at once. Each talks to the server as the browser does, over Streamlit's websocket
(/_stcore/stream, protobuf BackMsg/ForwardMsg): it runs the page, then types --predictions reviews
into the text box one after another and waits for each label to come back. Meanwhile /_stcore/health
is polled and the server's resident memory (RSS) sampled. Fresh sessions each round show whether
memory comes back when sessions close.

Passes when every prediction is answered with a label, every health check says ok within
--health-timeout, and memory stays flat: the RSS once each round's sessions are closed and gone
shows no upward trend. The trend is the least-squares slope over the rounds, times the rounds after
the first, as a share of the first round's figure (the first round is the warm-up: the first
predictions allocate inference buffers and thread pools the process keeps); it must stay within
--max-growth. One reading moves by tens of MB with the allocator, so use 5 rounds or more for a
verdict on memory.

Streamlit keeps a closed session for server.disconnectedSessionTTL seconds (120 by default, at most
128 of them) in case its browser reconnects. The test sets it to --session-ttl (5 s) so that "gone"
comes within the run: it waits --settle seconds after each round, then opens one more session, which
makes Streamlit drop the expired ones, and reads the RSS. The peak during each round is reported too
(20 reviews in flight need working memory). Prints a summary and writes every figure to
results/load_test.json (--output), with the precision the app served and why (its sidebar's line: 'auto'
resolves per machine, bf16 on a CPU with AMX) and the load average at the start and the end. Bounded: at most 50 sessions, 20 predictions each, 10 rounds, and
--time-limit seconds in all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from training import storage
from training.paths import PROJECT_ROOT, RESULTS_DIR
from webapp.harness import HEALTH_PATH, HOST, health_check, start_app

LIMITS = {"sessions": 50, "predictions": 20, "rounds": 10}
RESULT_LABELS = ("POSITIVE", "NEGATIVE", "UNCERTAIN")
READY_PATH = "/api/ready"  # the app's readiness check (app.py): 200 once the model answers
# The sidebar's line on the loaded model (webapp.render.model_facts): "- **Precision:** bf16 (auto: …)".
PRECISION_LINE = re.compile(r"\*\*Precision:\*\* (\S+) \((.*)\)$", re.MULTILINE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20, help="Concurrent sessions per round (at most 50).")
    parser.add_argument(
        "--predictions", type=int, default=3, help="Reviews each session submits, one after another (at most 20)."
    )
    parser.add_argument("--rounds", type=int, default=6, help="Rounds of fresh sessions (at most 10).")
    parser.add_argument(
        "--model", type=Path, default=None, help="Adapter folder for the app (default: the app's, trained_model/)."
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=PROJECT_ROOT.parent / "shared" / "data" / "imdb",
        help="Folder with test.parquet to draw real reviews from (default: ../shared/data/imdb; "
        "the app's example reviews if it is missing).",
    )
    parser.add_argument("--time-limit", type=float, default=900, help="Give up after this many seconds in all.")
    parser.add_argument(
        "--max-growth",
        type=float,
        default=0.10,
        help="Largest accepted trend of the settled RSS over the run, as a share of the first round's (0.10 = 10%%).",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10,
        help="Seconds to wait after each round's sessions close before reading the settled RSS.",
    )
    parser.add_argument(
        "--session-ttl",
        type=int,
        default=5,
        help="The server's disconnectedSessionTTL: seconds a closed session is kept (Streamlit's default: 120).",
    )
    parser.add_argument(
        "--health-timeout", type=float, default=5, help="A health check slower than this counts as failed."
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="An environment variable for the server, e.g. OMP_NUM_THREADS=1 (repeatable).",
    )
    parser.add_argument("--interval", type=float, default=0.5, help="Seconds between health checks and memory samples.")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="Mixed sessions instead of typing only: each types --predictions reviews, asks why for one and uploads "
        "a file of --upload-rows reviews to score, in one of three orders, all at once; plus the hostile sessions.",
    )
    parser.add_argument(
        "--hostile",
        type=int,
        default=1,
        help="With --mixed: each hostile session this many times per round (the Parquet bomb, a --big-message-mb "
        "websocket message, a --long-review-mb one-line review typed and uploaded); 0 for none (at most 5).",
    )
    parser.add_argument(
        "--upload-rows", type=int, default=20, help="Reviews in each mixed session's upload (at most 200)."
    )
    parser.add_argument("--big-message-mb", type=float, default=200, help="The oversized websocket message (MB).")
    parser.add_argument(
        "--long-review-mb", type=float, default=10, help="The one-line review, typed and uploaded (MB)."
    )
    parser.add_argument(
        "--max-peak-mb", type=float, default=2048, help="With --mixed: the largest accepted peak resident memory (MB)."
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "load_test.json", help="Where the figures go (JSON)."
    )
    args = parser.parse_args(argv)
    for name, limit in LIMITS.items():
        if not 1 <= getattr(args, name) <= limit:
            parser.error(f"--{name} must be between 1 and {limit}")
    if not 0 <= args.hostile <= 5 or not 1 <= args.upload_rows <= 200:
        parser.error("--hostile must be between 0 and 5, --upload-rows between 1 and 200")
    if args.big_message_mb > 500 or args.long_review_mb > 10:
        parser.error("--big-message-mb is at most 500 and --long-review-mb at most 10 (the upload limit)")
    return args


# ----------------------------------------------------------------------------- the server


def health(port: int, timeout: float = 5.0) -> tuple[bool, float]:
    return health_check(f"http://{HOST}:{port}", timeout)


def rss_bytes(process: psutil.Process) -> int:
    """Resident memory of the server and any children it started."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Monitor(threading.Thread):
    """Polls /_stcore/health and samples the server's RSS every `interval` seconds until stopped."""

    def __init__(self, port: int, process: psutil.Process, interval: float, timeout: float):
        super().__init__(daemon=True)
        self.port, self.process, self.interval, self.timeout = port, process, interval, timeout
        self.health: list[tuple[float, bool, float]] = []  # (time, ok, seconds)
        self.memory: list[tuple[float, int]] = []  # (time, rss bytes)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            now = time.monotonic()
            self.memory.append((now, rss_bytes(self.process)))
            ok, seconds = health(self.port, self.timeout)
            self.health.append((now, ok, seconds))
            self.stopped.wait(max(self.interval - (time.monotonic() - now), 0))


# ----------------------------------------------------------------------------- one browser session, over the websocket


class Session:
    """One app session as the browser holds it: a websocket carrying protobuf messages both ways."""

    def __init__(self, port: int, compression: str | None = "deflate"):
        self.port, self.compression = port, compression
        self.url = f"ws://{HOST}:{port}/_stcore/stream"
        self.review_box_id: str | None = None
        self.upload_id: str | None = None  # the file uploader's widget id
        self.buttons: dict[str, str] = {}  # label -> widget id, from the last page
        self.session_id: str | None = None
        self.uploaded = None  # UploadedFileInfo of the file in the uploader, sent with every rerun
        self.exceptions: list[str] = []  # exception elements seen (a traceback reached the page)
        self.precision: dict | None = None  # the precision the page says the model runs in, and why

    async def __aenter__(self) -> Session:
        import websockets

        self.socket = await websockets.connect(
            self.url, subprotocols=["streamlit"], max_size=2**26, open_timeout=60, compression=self.compression
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.socket.close()

    async def receive(self):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        reply = ForwardMsg()
        reply.ParseFromString(await self.socket.recv())
        kind = reply.WhichOneof("type")
        if kind == "new_session" and reply.new_session.initialize.session_id:
            self.session_id = reply.new_session.initialize.session_id
        return kind, reply

    def rerun_message(self, review: str | None = None, click: str | None = None):
        """A BackMsg that reruns the page with `review` in the box, the uploaded file (if any), and `click`ed."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        message.rerun_script.query_string = ""
        widgets = message.rerun_script.widget_states.widgets
        if review is not None:
            widget = widgets.add()
            widget.id, widget.string_value = self.review_box_id, review
        if self.uploaded is not None:
            widget = widgets.add()
            widget.id = self.upload_id
            widget.file_uploader_state_value.uploaded_file_info.append(self.uploaded)
        if click is not None:
            widget = widgets.add()
            widget.id, widget.trigger_value = click, True
        return message

    async def run_page(self, review: str | None = None, click: str | None = None) -> tuple[float, list]:
        """Run the script once (with `review` typed in the box, `click` the id of a button pressed); returns
        (seconds, the new elements). Exception elements are kept in self.exceptions."""
        started = time.perf_counter()
        await self.socket.send(self.rerun_message(review, click).SerializeToString())
        elements = []
        while True:
            kind, reply = await self.receive()
            if kind == "delta" and reply.delta.WhichOneof("type") == "new_element":
                element = reply.delta.new_element
                elements.append(element)
                if element.WhichOneof("type") == "exception":
                    self.exceptions.append(f"{element.exception.type}: {element.exception.message}"[:300])
            elif kind == "script_finished":
                self.remember_widgets(elements)
                return time.perf_counter() - started, elements

    def remember_widgets(self, elements) -> None:
        for element in elements:
            kind = element.WhichOneof("type")
            if kind == "text_area" and self.review_box_id is None:
                self.review_box_id = element.text_area.id
            elif kind == "file_uploader":
                self.upload_id = element.file_uploader.id
            elif kind == "button":
                self.buttons[element.button.label] = element.button.id
            elif kind == "markdown" and (line := PRECISION_LINE.search(element.markdown.body)):
                self.precision = {"precision": line[1], "reason": line[2]}

    def button(self, starts_with: str) -> str | None:
        return next((id_ for label, id_ in self.buttons.items() if label.startswith(starts_with)), None)

    async def open_page(self) -> bool:
        """Run the page once; whether the model was ready (the sidebar's "Running on …", the page's ready state)."""
        _, elements = await self.run_page()
        if self.review_box_id is None:
            raise RuntimeError(f"no text box on the page; it showed: {describe(elements)}")
        return any(
            element.WhichOneof("type") == "alert" and element.alert.body.startswith("Running on")
            for element in elements
        )

    async def predict(self, review: str) -> tuple[float, str]:
        """Submit a review; returns (seconds until the page finished, the label shown)."""
        seconds, elements = await self.run_page(review)
        label = shown_label(elements)
        if label is None:
            raise RuntimeError(f"no label came back; the page showed: {describe(elements)}")
        return seconds, label

    async def explain(self, review: str) -> tuple[str, float, str]:
        """Ask for the explanation of `review` (already predicted): ("answered" | "refused" | "error", seconds, what)."""
        explain = self.button("Why?")
        if explain is None:
            return "error", 0.0, "no Explain button on the page"
        seconds, elements = await self.run_page(review, click=explain)
        if any(e.WhichOneof("type") == "html" and "review-highlight" in e.html.body for e in elements):
            return "answered", seconds, "highlighted review"
        return classify(elements, seconds)

    async def send_oversized(self, size: int) -> tuple[str, float, str]:
        """One rerun message carrying a review of `size` bytes (over server.maxMessageSize): the server must close
        the connection with 1009 "message too big" ("refused", with that message) and stay up."""
        import websockets

        payload = self.rerun_message("x" * size).SerializeToString()
        started = time.perf_counter()
        try:
            await self.socket.send(payload)
            while True:
                await asyncio.wait_for(self.receive(), timeout=60)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            reason = closed.rcvd.reason if closed.rcvd else "no close frame"
            seconds = time.perf_counter() - started
            if code == 1009:
                return "refused", seconds, f"closed with {code} ({reason or 'message too big'})"
            return "error", seconds, f"closed with {code} ({reason})"
        except (ConnectionError, TimeoutError) as error:
            return "error", time.perf_counter() - started, f"{type(error).__name__}: {error}"

    async def upload(self, name: str, data: bytes) -> None:
        """Upload a file as the browser does: ask for an upload URL over the websocket, PUT the file there (with
        the XSRF cookie and header the page sets), then the next reruns carry the uploader's state."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.Common_pb2 import UploadedFileInfo

        request = BackMsg()
        request.file_urls_request.request_id = f"load-test-{id(self)}"
        request.file_urls_request.session_id = self.session_id or ""
        request.file_urls_request.file_names.append(name)
        await self.socket.send(request.SerializeToString())
        while True:
            kind, reply = await self.receive()
            if kind == "file_urls_response":
                break
        response = reply.file_urls_response
        if response.error_msg or not response.file_urls:
            raise RuntimeError(f"no upload URL: {response.error_msg or 'empty response'}")
        urls = response.file_urls[0]
        await asyncio.to_thread(put_file, self.port, urls.upload_url, name, data)
        self.uploaded = UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id)
        self.uploaded.file_urls.CopyFrom(urls)

    async def upload_and_score(self, name: str, data: bytes) -> tuple[str, float, str]:
        """Upload a file, then click Score: ("answered" | "refused" | "error", seconds, what the page said)."""
        started = time.perf_counter()
        await self.upload(name, data)
        _, elements = await self.run_page()
        score = self.button("Score ")
        if score is None:  # refused on reading (a message), or an error
            return classify(elements, time.perf_counter() - started)
        _, elements = await self.run_page(click=score)
        if any(e.WhichOneof("type") == "download_button" for e in elements):
            return "answered", time.perf_counter() - started, "scored"
        return classify(elements, time.perf_counter() - started)


def put_file(port: int, upload_url: str, name: str, data: bytes) -> None:
    """PUT one file to Streamlit's upload endpoint, multipart as the browser sends it, with the XSRF token."""
    import urllib.request

    base = f"http://{HOST}:{port}"
    with urllib.request.urlopen(base + HEALTH_PATH, timeout=30) as page:  # sets the _streamlit_xsrf cookie
        cookies = [value.split(";", 1)[0] for key, value in page.headers.items() if key.lower() == "set-cookie"]
    token = next((c.split("=", 1)[1] for c in cookies if c.startswith("_streamlit_xsrf=")), "")
    boundary = "----load-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    url = upload_url if upload_url.startswith("http") else base + upload_url
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Cookie": "; ".join(cookies),
            "X-Xsrftoken": token,
        },
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        if response.status not in (200, 204):
            raise RuntimeError(f"upload answered {response.status}")


def shown_label(elements) -> str | None:
    for element in elements:
        if element.WhichOneof("type") == "markdown" and element.markdown.body.startswith("##"):
            for label in RESULT_LABELS:
                if label in element.markdown.body:
                    return label
    return None


REFUSALS = ("The server is busy", "decodes to", "this reader takes", "the app reads", "longer than")


def classify(elements, seconds: float) -> tuple[str, float, str]:
    """A page with a warning or an error that says why (the queue is full, a file over a limit): "refused";
    anything else (an unexpected-error line, an exception, nothing at all): "error"."""
    alerts = [e.alert for e in elements if e.WhichOneof("type") == "alert"]
    for alert in alerts:
        if alert.format in (1, 2) and any(phrase in alert.body for phrase in REFUSALS):
            return "refused", seconds, alert.body[:200]
    return "error", seconds, describe(elements)


def describe(elements) -> str:
    alerts = [element.alert.body for element in elements if element.WhichOneof("type") == "alert"]
    errors = [element.exception.message for element in elements if element.WhichOneof("type") == "exception"]
    return "; ".join(alerts + errors)[:500] or f"{len(elements)} elements, none with a label"


async def one_session(port: int, reviews: list[str]) -> dict:
    record = {"latencies": [], "labels": [], "errors": []}
    try:
        async with Session(port) as session:
            await session.open_page()
            for review in reviews:
                seconds, label = await session.predict(review)
                record["latencies"].append(seconds)
                record["labels"].append(label)
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported, none stops the others
        record["errors"].append(f"{type(error).__name__}: {error}")
    return record


async def one_round(port: int, sessions: int, reviews_per_session: list[list[str]], time_left: float) -> list[dict]:
    tasks = [one_session(port, reviews_per_session[index]) for index in range(sessions)]
    return await asyncio.wait_for(asyncio.gather(*tasks), timeout=time_left)


# ----------------------------------------------------------------------------- mixed and hostile sessions

EXPLAINED_CHARS = 600  # the review explained is the typed one cut to a paragraph (a whole review: up to a minute)
MIB = 2**20


def request(kind: str, outcome: str, seconds: float, what: str) -> dict:
    return {"kind": kind, "outcome": outcome, "seconds": round(seconds, 2), "what": what[:300]}


async def mixed_session(port: int, reviews: list[str], upload: tuple[str, bytes], order: int) -> dict:
    """A visitor who types reviews, asks why for one, and uploads a file to score, in one of three orders."""
    record = {"requests": [], "exceptions": []}
    session = Session(port)
    try:
        async with session:
            await session.open_page()

            async def type_reviews() -> None:
                for review in reviews:
                    try:
                        seconds, label = await session.predict(review)
                        record["requests"].append(request("type", "answered", seconds, label))
                    except RuntimeError as error:
                        record["requests"].append(request("type", "error", 0.0, str(error)))

            async def explain() -> None:
                short = reviews[-1][:EXPLAINED_CHARS]
                await session.predict(short)  # the Explain button belongs to the review on screen
                record["requests"].append(request("explain", *(await session.explain(short))))

            async def upload_file() -> None:
                record["requests"].append(request("upload", *(await session.upload_and_score(*upload))))

            steps = [type_reviews, explain, upload_file]
            for step in steps[order % 3 :] + steps[: order % 3]:
                if step is explain and not any(r["kind"] == "type" for r in record["requests"]):
                    await type_reviews()  # something typed before asking why
                await step()
    except Exception as error:  # noqa: BLE001 - counted and reported; none stops the others
        record["requests"].append(request("session", "error", 0.0, f"{type(error).__name__}: {error}"))
    record["exceptions"] = session.exceptions
    return record


def parquet_bomb(rows: int = 100, value_bytes: int = MIB) -> bytes:
    """The issue's bomb (as tests/test_safety.py builds it): a few hundred bytes that decode to 100 MiB."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({"text": pa.array(["a" * value_bytes] * rows).dictionary_encode()})
    pq.write_table(table, buffer, compression="zstd", use_dictionary=True, write_statistics=False, store_schema=False)
    return buffer.getvalue()


def one_line_review(size: int) -> str:
    """One line of `size` characters of ordinary words, no line break."""
    words = "a truly wonderful film with superb acting and a moving story "
    return (words * (size // len(words) + 1))[:size]


async def hostile_session(port: int, kind: str, size_mb: float) -> dict:
    """One hostile visitor: "bomb" (the Parquet bomb upload), "big_message" (one websocket message of `size_mb`),
    "long_review" (a one-line review of `size_mb` typed in the box), "long_upload" (the same as a .txt upload)."""
    record = {"requests": [], "exceptions": []}
    size = int(size_mb * 10**6)
    session = Session(port, compression=None if kind == "big_message" else "deflate")
    started = time.perf_counter()
    try:
        async with session:
            await session.open_page()
            if kind == "bomb":
                result = await session.upload_and_score("bomb.parquet", parquet_bomb())
            elif kind == "long_upload":
                result = await session.upload_and_score("one_line.txt", one_line_review(size).encode())
            elif kind == "long_review":
                seconds, elements = await session.run_page(one_line_review(size))
                label = shown_label(elements)
                result = ("answered", seconds, label) if label else classify(elements, seconds)
            else:
                result = await session.send_oversized(size)
            record["requests"].append(request(kind, *result))
    except Exception as error:  # noqa: BLE001
        record["requests"].append(
            request(kind, "error", time.perf_counter() - started, f"{type(error).__name__}: {error}")
        )
    record["exceptions"] = session.exceptions
    return record


def upload_csv(reviews: list[str]) -> bytes:
    import pandas as pd

    return pd.DataFrame({"id": range(len(reviews)), "text": reviews}).to_csv(index=False).encode()


# ----------------------------------------------------------------------------- figures


def reviews_to_send(args: argparse.Namespace, needed: int | None = None) -> list[str]:
    needed = needed or args.sessions * args.predictions * args.rounds
    test_file = args.data / "test.parquet"
    if test_file.exists():
        import pandas as pd

        texts = pd.read_parquet(test_file, columns=["text"])["text"]
        return texts.sample(needed, random_state=0, replace=needed > len(texts)).tolist()
    from webapp.render import EXAMPLE_REVIEWS

    examples = list(EXAMPLE_REVIEWS.values())
    return [examples[index % len(examples)] for index in range(needed)]


def memory_trend(settled_mb: list[float]) -> float:
    """Least-squares growth over the run as a share of the first round's RSS (0.0 for a single round)."""
    if len(settled_mb) < 2:
        return 0.0
    slope = np.polyfit(np.arange(len(settled_mb)), settled_mb, 1)[0]
    return float(slope * (len(settled_mb) - 1) / settled_mb[0])


def health_summary(monitor) -> dict:
    """The health checks the monitor made during the rounds: how many, how many answered, their latency."""
    seconds = [seconds for _, _, seconds in monitor.health]
    return {
        "total": len(monitor.health),
        "ok": sum(ok for _, ok, _ in monitor.health),
        "latency_ms_p50": percentile_ms(seconds, 50),
        "latency_ms_p95": percentile_ms(seconds, 95),
        "latency_ms_max": percentile_ms(seconds, 100),
    }


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def mb(value: int) -> float:
    return round(value / 2**20, 1)


def server_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    """The app server's environment: --env pairs, the adapter folder when --model is given, and `extra`."""
    env = dict(item.split("=", 1) for item in args.env)
    if args.model is not None:
        env["SENTIMENT_MODEL_DIR"] = str(args.model)
    return {**env, **extra}


def play_rounds(args, deadline: float, port: int, process: psutil.Process, monitor, play) -> list[dict]:
    """--rounds rounds of `play(round_index, time_left)` (a dict of the round's own figures), each timed and
    followed by its memory: the peak the monitor saw during it and the settled figure after it."""
    rounds = []
    for round_index in range(args.rounds):
        time_left = deadline - time.monotonic()
        if time_left <= 0:
            raise TimeoutError(f"--time-limit {args.time_limit:.0f} s reached before round {round_index + 1}")
        started, window_start = time.perf_counter(), time.monotonic()
        figures = play(round_index, time_left)
        seconds = time.perf_counter() - started
        peak = max([value for moment, value in monitor.memory if moment >= window_start] or [rss_bytes(process)])
        rounds.append(
            {
                "round": round_index + 1,
                "seconds": round(seconds, 1),
                **figures,
                "rss_mb_peak": mb(peak),
                "rss_mb_settled": mb(settled(process, port, args.settle)),
            }
        )
    return rounds


def main(args: argparse.Namespace) -> dict:
    deadline = time.monotonic() + args.time_limit
    load_at_start = os.getloadavg()
    reviews = reviews_to_send(args)
    server = start_app(server_env(args), args=["--server.disconnectedSessionTTL", str(args.session_ttl)])
    port = server.port
    process = psutil.Process(server.pid)
    try:
        server.wait_until_healthy(timeout_s=120)
        healthy_s = server.elapsed_s()
        wait_until_ready(port, timeout_s=300)  # the model loads as the server starts; /api/ready says when it answers
        first_page_s, served = asyncio.run(asyncio.wait_for(first_page(port), timeout=300))
        rss_ready = rss_bytes(process)

        def play(round_index: int, time_left: float) -> dict:
            start = round_index * args.sessions * args.predictions
            batch = reviews[start : start + args.sessions * args.predictions]
            per_session = [batch[i * args.predictions : (i + 1) * args.predictions] for i in range(args.sessions)]
            records = asyncio.run(one_round(port, args.sessions, per_session, time_left))
            latencies = [value for record in records for value in record["latencies"]]
            return {
                "predictions_sent": args.sessions * args.predictions,
                "predictions_answered": len(latencies),
                "errors": [error for record in records for error in record["errors"]],
                "labels": {label: sum(r["labels"].count(label) for r in records) for label in RESULT_LABELS},
                "latency_ms_p50": percentile_ms(latencies, 50),
                "latency_ms_p95": percentile_ms(latencies, 95),
                "latency_ms_max": percentile_ms(latencies, 100),
            }

        monitor = Monitor(port, process, args.interval, args.health_timeout)
        monitor.start()
        rounds = play_rounds(args, deadline, port, process, monitor, play)
        monitor.stopped.set()
        monitor.join()
    finally:
        server.stop(timeout_s=20)
        server.log.unlink(missing_ok=True)

    growth = memory_trend([r["rss_mb_settled"] for r in rounds])
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "served": served,
        "settings": {
            "sessions": args.sessions,
            "predictions_per_session": args.predictions,
            "rounds": args.rounds,
            "server_env": args.env,
            "health_timeout_s": args.health_timeout,
            "disconnected_session_ttl_s": args.session_ttl,
            "settle_s": args.settle,
            "model": str(args.model or "trained_model/ (the app's default)"),
            "reviews": "IMDb test split" if (args.data / "test.parquet").exists() else "the app's examples",
        },
        "server": {"healthy_after_s": round(healthy_s, 1), "first_page_s": round(first_page_s, 1)},
        "predictions": {
            "sent": sum(r["predictions_sent"] for r in rounds),
            "answered": sum(r["predictions_answered"] for r in rounds),
            "errors": sum(len(r["errors"]) for r in rounds),
        },
        "health_checks": {
            **health_summary(monitor),
            "failed_at_s": [round(moment - monitor.health[0][0], 1) for moment, ok, _ in monitor.health if not ok],
        },
        "memory": {
            "rss_mb_ready": mb(rss_ready),
            "rss_mb_peak": mb(max(value for _, value in monitor.memory)),
            "rss_mb_peak_of_each_round": [r["rss_mb_peak"] for r in rounds],
            "rss_mb_settled_after_each_round": [r["rss_mb_settled"] for r in rounds],
            "trend_over_the_run": round(growth, 4),
            "max_growth": args.max_growth,
        },
        "rounds": rounds,
    }
    report["passed"] = bool(
        report["predictions"]["answered"] == report["predictions"]["sent"]
        and report["health_checks"]["ok"] == report["health_checks"]["total"] > 0
        and growth <= args.max_growth
    )
    return report


def wait_until_ready(port: int, timeout_s: float) -> float:
    """Poll the app's readiness endpoint (GET /api/ready: 503 while the model loads, 200 once it answers) and return
    the seconds it took; raise if the load failed, another server answers, or `timeout_s` passes."""
    import json
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{READY_PATH}", timeout=5) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read())
        except OSError:
            answer = {"state": "loading"}
        if answer.get("state") == "ready":
            return time.perf_counter() - started
        if answer.get("state") == "failed":
            raise RuntimeError(f"the model failed to load: {answer}")
        time.sleep(0.2)
    raise TimeoutError(f"{READY_PATH} did not say ready within {timeout_s:.0f} s")


def peak_resident_bytes(process: psutil.Process) -> int:
    """The kernel's high-water mark of the server's resident memory (VmHWM; Linux), plus its children's now."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) * 1024
                return own + rss_bytes(process) - process.memory_info().rss
    except (OSError, ValueError, psutil.Error):
        pass
    return 0


def tally(records: list[dict]) -> dict:
    """Requests by kind: sent, answered, refused (with the page's message), errors, and their latencies."""
    kinds: dict[str, dict] = {}
    for record in records:
        for item in record["requests"]:
            entry = kinds.setdefault(item["kind"], {"sent": 0, "answered": 0, "refused": 0, "errors": 0, "seconds": []})
            entry["sent"] += 1
            entry["errors" if item["outcome"] == "error" else item["outcome"]] += 1
            entry["seconds"].append(item["seconds"])
    for entry in kinds.values():
        seconds = entry.pop("seconds")
        entry["latency_s_p50"] = round(float(np.percentile(seconds, 50)), 2) if seconds else None
        entry["latency_s_max"] = round(max(seconds), 2) if seconds else None
    return kinds


def tracebacks_in(server, log_dir: Path) -> dict:
    """Tracebacks anywhere: in the server's output, and log files the app wrote for unexpected errors."""
    output = server.log.read_text(errors="replace") if server.log.exists() else ""
    files = sorted(log_dir.glob("*")) if log_dir.exists() else []
    return {
        "server_output": output.count("Traceback"),
        "log_files": [file.name for file in files],
        "server_output_tail": output[-1500:] if "Traceback" in output else "",
    }


def main_mixed(args: argparse.Namespace) -> dict:
    """The issue's run: --sessions mixed sessions at once plus the hostile ones, --rounds times (see --mixed)."""
    import tempfile

    deadline = time.monotonic() + args.time_limit
    load_at_start = os.getloadavg()
    per_session = args.predictions + args.upload_rows
    texts = reviews_to_send(args, args.sessions * per_session * args.rounds + per_session)
    log_dir = Path(tempfile.mkdtemp(prefix="load_test_logs_"))
    # the app's log files for unexpected errors: none expected
    server = start_app(
        server_env(args, SENTIMENT_LOG_DIR=str(log_dir)),
        args=["--server.disconnectedSessionTTL", str(args.session_ttl)],
    )
    port, process = server.port, psutil.Process(server.pid)
    hostile = [kind for kind in ("bomb", "big_message", "long_review", "long_upload") for _ in range(args.hostile)]

    def session_plan(start: int) -> tuple[list[str], tuple[str, bytes]]:
        chunk = texts[start : start + per_session]
        return chunk[: args.predictions], ("reviews.csv", upload_csv(chunk[args.predictions :]))

    async def run_round(start: int, time_left: float) -> list[dict]:
        tasks = [mixed_session(port, *session_plan(start + i * per_session), i) for i in range(args.sessions)]
        sizes = {"big_message": args.big_message_mb, "long_review": args.long_review_mb}
        sizes["long_upload"] = args.long_review_mb
        tasks += [hostile_session(port, kind, sizes.get(kind, 0)) for kind in hostile]
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=time_left)

    monitor = None
    try:
        server.wait_until_healthy(timeout_s=120)
        healthy_s = server.elapsed_s()
        ready_s = healthy_s + wait_until_ready(port, timeout_s=300)
        rss_ready = rss_bytes(process)
        _, served = asyncio.run(asyncio.wait_for(first_page(port), timeout=120))
        # Warm-up: one mixed session alone. The first explanation loads a full-precision copy of the model,
        # kept for the next ones; "before" is the server's memory once everything a visitor can use is loaded.
        warm_up = asyncio.run(asyncio.wait_for(mixed_session(port, *session_plan(0), 0), timeout=600))
        rss_before = settled(process, port, args.settle)

        def play(round_index: int, time_left: float) -> dict:
            records = asyncio.run(run_round(per_session * (1 + round_index * args.sessions), time_left))
            return {
                "requests": tally(records),
                "errors": [r for record in records for r in record["requests"] if r["outcome"] == "error"],
                "page_exceptions": [e for record in records for e in record["exceptions"]],
            }

        monitor = Monitor(port, process, args.interval, args.health_timeout)
        monitor.start()
        rounds = play_rounds(args, deadline, port, process, monitor, play)
        monitor.stopped.set()
        monitor.join()
        peak_hwm = peak_resident_bytes(process)
    finally:
        if monitor is not None:
            monitor.stopped.set()
        server.stop(timeout_s=20)
        tracebacks = tracebacks_in(server, log_dir)
        server.log.unlink(missing_ok=True)

    totals: dict[str, dict] = {}
    for round_ in rounds:
        for kind, entry in round_["requests"].items():
            total = totals.setdefault(kind, {"sent": 0, "answered": 0, "refused": 0, "errors": 0})
            for key in total:
                total[key] += entry[key]
    sent = sum(t["sent"] for t in totals.values())
    answered = sum(t["answered"] for t in totals.values())
    refused = sum(t["refused"] for t in totals.values())
    errors = sum(t["errors"] for t in totals.values())
    exceptions = [e for rd in rounds for e in rd["page_exceptions"]]
    peak = max(max(value for _, value in monitor.memory), peak_hwm)
    rss_after = rounds[-1]["rss_mb_settled"] * 2**20
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "served": served,
        "settings": {
            "mixed_sessions_per_round": args.sessions,
            "hostile_sessions_per_round": hostile,
            "rounds": args.rounds,
            "reviews_typed_per_session": args.predictions,
            "explained_review_chars": EXPLAINED_CHARS,
            "upload_rows": args.upload_rows,
            "big_message_mb": args.big_message_mb,
            "long_review_mb": args.long_review_mb,
            "server_env": args.env,
            "heavy_slots": os.environ.get("SENTIMENT_HEAVY_SLOTS", "1 (default)"),
            "disconnected_session_ttl_s": args.session_ttl,
            "settle_s": args.settle,
        },
        "server": {"healthy_after_s": round(healthy_s, 2), "ready_after_s": round(ready_s, 2)},
        "warm_up": tally([warm_up]),
        "requests": {
            "sent": sent,
            "answered": answered,
            "refused_with_message": refused,
            "errors": errors,
            "by_kind": totals,
            "error_details": [error for round_ in rounds for error in round_["errors"]][:20],
        },
        "tracebacks": {
            "on_pages": len(exceptions),
            "page_details": exceptions[:10],
            "in_server_output": tracebacks["server_output"],
            "app_log_files": tracebacks["log_files"],
            "server_output_tail": tracebacks["server_output_tail"],
        },
        "health_checks": health_summary(monitor),
        "memory": {
            "rss_mb_ready": mb(rss_ready),
            "rss_mb_before": mb(rss_before),
            "rss_mb_peak": mb(peak),
            "rss_mb_peak_sampled_each_round": [r["rss_mb_peak"] for r in rounds],
            "rss_mb_peak_kernel_high_water_mark": mb(peak_hwm),
            "rss_mb_after": mb(rss_after),
            "after_vs_before": round(rss_after / rss_before - 1, 4),
            "rss_mb_settled_after_each_round": [r["rss_mb_settled"] for r in rounds],
            "max_peak_mb": args.max_peak_mb,
            "max_growth": args.max_growth,
        },
        "rounds": rounds,
    }
    report["passed"] = bool(
        errors == 0
        and not exceptions
        and tracebacks["server_output"] == 0
        and not tracebacks["log_files"]
        and answered + refused == sent > 0
        and mb(peak) < args.max_peak_mb
        and abs(rss_after / rss_before - 1) <= args.max_growth
    )
    return report


def machine(load_at_start: tuple[float, float, float]) -> dict:
    """The machine and how busy it was: the 1, 5 and 15 minute load averages at the start and the end."""
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": [round(value, 2) for value in load_at_start],
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
    }


def settled(process: psutil.Process, port: int, seconds: float) -> int:
    """The server's RSS once a round's sessions are gone: what it keeps, not what it was using.

    Streamlit drops expired closed sessions when the next session arrives, so one comes and goes."""
    time.sleep(seconds)
    asyncio.run(asyncio.wait_for(first_page(port), timeout=120))
    time.sleep(1)
    return rss_bytes(process)


async def first_page(port: int) -> tuple[float, dict | None]:
    """Seconds until a session's page says the model is ready (it loads in the background, once per server;
    the page is drawn at once and polls meanwhile, so a fresh session is opened until it shows "Running on"),
    and the precision that page says the model runs in."""
    started = time.perf_counter()
    while True:
        async with Session(port) as session:
            if await session.open_page():
                return time.perf_counter() - started, session.precision
        await asyncio.sleep(0.5)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summary_mixed(args: argparse.Namespace, report: dict) -> str:
    requests, traces, memory, checks = (
        report["requests"],
        report["tracebacks"],
        report["memory"],
        report["health_checks"],
    )
    kinds = ", ".join(
        f"{kind} {entry['answered']}/{entry['refused']}/{entry['errors']}"
        for kind, entry in requests["by_kind"].items()
    )
    return (
        f"{args.sessions} mixed + {len(report['settings']['hostile_sessions_per_round'])} hostile sessions x "
        f"{args.rounds} rounds on {report['machine']['cpu']} ({report['machine']['cores']} cores, load "
        f"{report['machine']['load_average_at_start']} to {report['machine']['load_average_at_end']}), served in "
        f"{served_precision(report)}: {requests['sent']} requests, {requests['answered']} answered, "
        f"{requests['refused_with_message']} refused with a message, {requests['errors']} errors (answered/refused/"
        f"errors: {kinds}); tracebacks: {traces['on_pages']} on pages, {traces['in_server_output']} in the server's "
        f"output, {len(traces['app_log_files'])} log files; health {checks['ok']}/{checks['total']} ok (p50 "
        f"{checks['latency_ms_p50']} ms, p95 {checks['latency_ms_p95']} ms, max {checks['latency_ms_max']} ms); RSS "
        f"ready {memory['rss_mb_ready']} MB, before {memory['rss_mb_before']} MB, peak {memory['rss_mb_peak']} MB, "
        f"after {memory['rss_mb_after']} MB ({memory['after_vs_before']:+.1%}). "
        f"{'PASSED' if report['passed'] else 'FAILED'}. Figures: {args.output}"
    )


def served_precision(report: dict) -> str:
    served = report["served"]
    return "an unknown precision (the page did not say)" if served is None else served["precision"]


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mixed:
        report = main_mixed(args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        storage.write_json(args.output, report)
        print(summary_mixed(args, report))
        return 0 if report["passed"] else 1
    report = main(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(args.output, report)
    predictions, checks, memory = report["predictions"], report["health_checks"], report["memory"]
    print(
        f"{args.sessions} sessions x {args.predictions} predictions x {args.rounds} rounds on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores, load {report['machine']['load_average_at_start']} to "
        f"{report['machine']['load_average_at_end']}), served in {served_precision(report)}: "
        f"{predictions['answered']}/{predictions['sent']} predictions answered, "
        f"{predictions['errors']} errors; health {checks['ok']}/{checks['total']} ok (p95 {checks['latency_ms_p95']} ms); "
        f"RSS ready {memory['rss_mb_ready']} MB, peak per round {memory['rss_mb_peak_of_each_round']} MB, settled after "
        f"each round {memory['rss_mb_settled_after_each_round']} MB (trend {memory['trend_over_the_run']:+.1%} over the run); "
        f"prediction latency p50/p95 per round "
        f"{[(r['latency_ms_p50'], r['latency_ms_p95']) for r in report['rounds']]} ms. "
        f"{'PASSED' if report['passed'] else 'FAILED'}. Figures: {args.output}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli())
