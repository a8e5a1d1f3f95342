"""A bounded load test of the running app, on loopback only.

    python scripts/load_test.py                       # 20 sessions x 3 predictions, 6 rounds
    python scripts/load_test.py --sessions 5 --rounds 1 --predictions 2   # a quick look

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
results/load_test.json. Bounded: at most 50 sessions, 20 predictions each, 10 rounds, and
--time-limit seconds in all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from inference.app_server import HOST, health_check, start_app
from training import storage
from training.paths import PROJECT_ROOT, RESULTS_DIR

LIMITS = {"sessions": 50, "predictions": 20, "rounds": 10}
RESULT_LABELS = ("POSITIVE", "NEGATIVE", "UNCERTAIN")


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
        "--output", type=Path, default=RESULTS_DIR / "load_test.json", help="Where the figures go (JSON)."
    )
    args = parser.parse_args(argv)
    for name, limit in LIMITS.items():
        if not 1 <= getattr(args, name) <= limit:
            parser.error(f"--{name} must be between 1 and {limit}")
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

    def __init__(self, port: int):
        self.url = f"ws://{HOST}:{port}/_stcore/stream"
        self.review_box_id: str | None = None

    async def __aenter__(self) -> Session:
        import websockets

        self.socket = await websockets.connect(self.url, subprotocols=["streamlit"], max_size=2**26, open_timeout=60)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.socket.close()

    async def run_page(self, review: str | None = None) -> tuple[float, list]:
        """Run the script once (with `review` typed in the box); returns (seconds, the new elements)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = BackMsg()
        message.rerun_script.query_string = ""
        if review is not None:
            widget = message.rerun_script.widget_states.widgets.add()
            widget.id, widget.string_value = self.review_box_id, review
        started = time.perf_counter()
        await self.socket.send(message.SerializeToString())
        elements = []
        while True:
            reply = ForwardMsg()
            reply.ParseFromString(await self.socket.recv())
            kind = reply.WhichOneof("type")
            if kind == "delta" and reply.delta.WhichOneof("type") == "new_element":
                elements.append(reply.delta.new_element)
            elif kind == "script_finished":
                return time.perf_counter() - started, elements

    async def open_page(self) -> bool:
        """Run the page once; whether the model was ready (the sidebar's "Running on …", the page's ready state)."""
        _, elements = await self.run_page()
        boxes = [element.text_area.id for element in elements if element.WhichOneof("type") == "text_area"]
        if not boxes:
            raise RuntimeError(f"no text box on the page; it showed: {describe(elements)}")
        self.review_box_id = boxes[0]
        return any(
            element.WhichOneof("type") == "alert" and element.alert.body.startswith("Running on")
            for element in elements
        )

    async def predict(self, review: str) -> tuple[float, str]:
        """Submit a review; returns (seconds until the page finished, the label shown)."""
        seconds, elements = await self.run_page(review)
        for element in elements:
            if element.WhichOneof("type") == "markdown" and element.markdown.body.startswith("##"):
                for label in RESULT_LABELS:
                    if label in element.markdown.body:
                        return seconds, label
        raise RuntimeError(f"no label came back; the page showed: {describe(elements)}")


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


# ----------------------------------------------------------------------------- figures


def reviews_to_send(args: argparse.Namespace) -> list[str]:
    needed = args.sessions * args.predictions * args.rounds
    test_file = args.data / "test.parquet"
    if test_file.exists():
        import pandas as pd

        texts = pd.read_parquet(test_file, columns=["text"])["text"]
        return texts.sample(needed, random_state=0, replace=needed > len(texts)).tolist()
    from inference.app_logic import EXAMPLE_REVIEWS

    examples = list(EXAMPLE_REVIEWS.values())
    return [examples[index % len(examples)] for index in range(needed)]


def memory_trend(settled_mb: list[float]) -> float:
    """Least-squares growth over the run as a share of the first round's RSS (0.0 for a single round)."""
    if len(settled_mb) < 2:
        return 0.0
    slope = np.polyfit(np.arange(len(settled_mb)), settled_mb, 1)[0]
    return float(slope * (len(settled_mb) - 1) / settled_mb[0])


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def mb(value: int) -> float:
    return round(value / 2**20, 1)


def main(args: argparse.Namespace) -> dict:
    deadline = time.monotonic() + args.time_limit
    reviews = reviews_to_send(args)
    env = dict(item.split("=", 1) for item in args.env)
    if args.model is not None:
        env["SENTIMENT_MODEL_DIR"] = str(args.model)
    server = start_app(env, args=["--server.disconnectedSessionTTL", str(args.session_ttl)])
    port = server.port
    process = psutil.Process(server.pid)
    try:
        server.wait_until_healthy(timeout_s=120)
        healthy_s = server.elapsed_s()
        first_page_s = asyncio.run(asyncio.wait_for(first_page(port), timeout=300))  # loads the model, once per server
        rss_ready = rss_bytes(process)

        monitor = Monitor(port, process, args.interval, args.health_timeout)
        monitor.start()
        rounds = []
        for round_index in range(args.rounds):
            time_left = deadline - time.monotonic()
            if time_left <= 0:
                raise TimeoutError(f"--time-limit {args.time_limit:.0f} s reached before round {round_index + 1}")
            start = round_index * args.sessions * args.predictions
            batch = reviews[start : start + args.sessions * args.predictions]
            per_session = [batch[i * args.predictions : (i + 1) * args.predictions] for i in range(args.sessions)]
            started, window_start = time.perf_counter(), time.monotonic()
            records = asyncio.run(one_round(port, args.sessions, per_session, time_left))
            elapsed = time.perf_counter() - started
            round_peak = max(
                [value for moment, value in monitor.memory if moment >= window_start] or [rss_bytes(process)]
            )
            latencies = [value for record in records for value in record["latencies"]]
            rounds.append(
                {
                    "round": round_index + 1,
                    "seconds": round(elapsed, 1),
                    "predictions_sent": args.sessions * args.predictions,
                    "predictions_answered": len(latencies),
                    "errors": [error for record in records for error in record["errors"]],
                    "labels": {label: sum(r["labels"].count(label) for r in records) for label in RESULT_LABELS},
                    "latency_ms_p50": percentile_ms(latencies, 50),
                    "latency_ms_p95": percentile_ms(latencies, 95),
                    "latency_ms_max": percentile_ms(latencies, 100),
                    "rss_mb_peak": mb(round_peak),
                    "rss_mb_settled": mb(settled(process, port, args.settle)),
                }
            )
        monitor.stopped.set()
        monitor.join()
    finally:
        server.stop(timeout_s=20)
        server.log.unlink(missing_ok=True)

    health_seconds = [seconds for _, _, seconds in monitor.health]
    growth = memory_trend([r["rss_mb_settled"] for r in rounds])
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        },
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
            "total": len(monitor.health),
            "ok": sum(ok for _, ok, _ in monitor.health),
            "latency_ms_p50": percentile_ms(health_seconds, 50),
            "latency_ms_p95": percentile_ms(health_seconds, 95),
            "latency_ms_max": percentile_ms(health_seconds, 100),
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


def settled(process: psutil.Process, port: int, seconds: float) -> int:
    """The server's RSS once a round's sessions are gone: what it keeps, not what it was using.

    Streamlit drops expired closed sessions when the next session arrives, so one comes and goes."""
    time.sleep(seconds)
    asyncio.run(asyncio.wait_for(first_page(port), timeout=120))
    time.sleep(1)
    return rss_bytes(process)


async def first_page(port: int) -> float:
    """Seconds until a session's page says the model is ready (it loads in the background, once per server;
    the page is drawn at once and polls meanwhile, so a fresh session is opened until it shows "Running on")."""
    started = time.perf_counter()
    while True:
        async with Session(port) as session:
            if await session.open_page():
                return time.perf_counter() - started
        await asyncio.sleep(0.5)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = main(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(args.output, report)
    predictions, checks, memory = report["predictions"], report["health_checks"], report["memory"]
    print(
        f"{args.sessions} sessions x {args.predictions} predictions x {args.rounds} rounds on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores): {predictions['answered']}/{predictions['sent']} predictions answered, "
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
