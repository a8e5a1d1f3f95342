"""A bounded load test of the sentiment API (serving/), on loopback only; writes one JSON record.

    python scripts/api_load_test.py --output results/api_load_test.json                  # the publishable run
    python scripts/api_load_test.py --duration 3 --reviews 64 --output /tmp/smoke.json  # a quick look

Starts a local Ray and the API (serving/api.py's application, the settings of serving/config.yaml with one model
replica holding every CPU unless --cpus-per-replica says otherwise) on a free 127.0.0.1 port, then measures, all in
one run and on the same IMDb training reviews (never the test split: figures here may steer settings):

1. clients: 1, 8 and 32 concurrent clients, each sending one review per request, back to back, for --duration
   seconds: throughput (reviews/s) and p50/p99 latency;
2. in_process: the same reviews through an in-process Predictor (predict, batch 32), against the API's best
   throughput of step 1 (the API's saturated throughput);
3. unbatched: the API redeployed with batching off, 32 clients again: what @serve.batch buys;
4. burst: 4 x max_queued_requests single-review requests sent at once: every answer must be 200 or a 503 with
   Retry-After (no other 5xx, no connection error), and the resident memory (RSS) of the Ray processes,
   settled after the burst, within 10% of before it.

Clients are plain threads with the standard library's http.client; the server side is Ray Serve's own batching
and queues. Bounded: at most 64 clients, --duration at most 120 s per step, 1,024 burst requests, and every
request times out after --request-timeout seconds. Prints a summary; the record holds every figure, the settings
and the machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import http.client
import json
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from serving.settings import CONFIG_FILE, load_config
from training import storage
from training.paths import RESULTS_DIR

HOST = "127.0.0.1"  # loopback only: this script never sends a request elsewhere
CLIENT_COUNTS = (1, 8, 32)
LIMITS = {"clients": 64, "duration": 120.0, "burst": 1024}
SETTLE_S = 5.0  # after the burst: let replicas finish and Python free what it will before reading RSS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="Adapter folder or export (default: the config's).")
    parser.add_argument("--config", type=Path, default=CONFIG_FILE, help="Serve config file (default: %(default)s).")
    parser.add_argument(
        "--cpus-per-replica",
        type=float,
        default=float(os.cpu_count() or 1),
        help="CPUs (and threads) of the one model replica (default: every CPU, as the in-process Predictor has).",
    )
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMDB_DATA_DIR", "../shared/data/imdb")))
    parser.add_argument("--reviews", type=int, default=512, help="Training reviews sampled (fixed seed) and cycled.")
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds per client-count step (at most 120).")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="Seconds before a request counts as hung.")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "api_load_test.json", help="The JSON record.")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= LIMITS["duration"] or args.reviews < 1:
        parser.error(f"--duration must be in (0, {LIMITS['duration']:.0f}] and --reviews at least 1")
    return args


# ----------------------------------------------------------------------------- clients (stdlib threads)


def post(connection: http.client.HTTPConnection, texts: list[str]) -> tuple[int, dict]:
    body = json.dumps({"texts": texts}).encode()
    connection.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    return response.status, {"retry_after": response.getheader("Retry-After"), "json": payload.startswith(b"{")}


def client_loop(port: int, texts: list[str], offset: int, stop_at: float, timeout: float) -> list[tuple]:
    """One client: single-review requests back to back on one keep-alive connection until `stop_at`; each
    answer as (status, seconds, when it ended). A connection error is status 0 and a fresh connection."""
    answers, index = [], offset
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            status, _ = post(connection, [texts[index % len(texts)]])
        except (OSError, http.client.HTTPException):
            status = 0
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
        ended = time.perf_counter()
        answers.append((status, ended - started, ended))
        index += 1
    connection.close()
    return answers


def concurrent_clients(port: int, texts: list[str], clients: int, duration: float, timeout: float) -> dict:
    """`clients` threads for `duration` seconds: reviews per second answered 200 (over the time until the last
    answer, as requests sent before the stop finish after it), latency percentiles, statuses."""
    started = time.perf_counter()
    stop_at = started + duration
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        runs = [pool.submit(client_loop, port, texts, i * 7, stop_at, timeout) for i in range(clients)]
        answers = [answer for run in runs for answer in run.result(timeout=duration + timeout + 30)]
    ok = [seconds for status, seconds, _ in answers if status == 200]
    elapsed = max(ended for _, _, ended in answers) - started
    return {
        "clients": clients,
        "requests": len(answers),
        "reviews_per_s": round(len(ok) / elapsed, 2),
        **percentiles(ok),
        "statuses": status_counts(answers),
    }


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None}
    values = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 1), "p99_ms": round(float(np.percentile(values, 99)), 1)}


def status_counts(answers) -> dict:
    statuses = [answer[0] for answer in answers]
    return {str(status): statuses.count(status) for status in sorted(set(statuses))}


def burst(port: int, texts: list[str], count: int, per_request: int, timeout: float) -> dict:
    """`count` requests released together (a barrier), each of `per_request` reviews on its own connection."""
    barrier = threading.Barrier(count)

    def one(index: int):
        connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
        chosen = [texts[(index + k) % len(texts)] for k in range(per_request)]
        barrier.wait(timeout=60)
        started = time.perf_counter()
        try:
            status, details = post(connection, chosen)
        except (OSError, http.client.HTTPException):
            status, details = 0, {}
        finally:
            connection.close()
        return status, time.perf_counter() - started, details

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(one, range(count)))
    refused = [details for status, _, details in answers if status == 503]
    return {
        "requests": count,
        "reviews_per_request": per_request,
        "statuses": status_counts(answers),
        "other_5xx": sum(1 for status, _, _ in answers if status >= 500 and status != 503),
        "connection_errors": sum(1 for status, _, _ in answers if status == 0),
        "refusals_with_retry_after_and_json": sum(1 for d in refused if d.get("retry_after") and d.get("json")),
        "slowest_answer_s": round(max(seconds for _, seconds, _ in answers), 2),
    }


# ----------------------------------------------------------------------------- the server side


def ray_rss_bytes() -> int:
    """Resident memory of every process this script's Ray started (GCS, raylet, workers, replicas)."""
    import psutil

    total = 0
    for process in psutil.Process().children(recursive=True):
        try:
            total += process.memory_info().rss
        except psutil.Error:  # ended meanwhile
            pass
    return total


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this script and each kind of process its Ray started, named by
    role: a window's difference shows where a saturated API spends the machine's cores."""
    import psutil

    roles = {
        "SentimentModel": "model replica",
        "SentimentAPI": "API ingress",
        "ProxyActor": "HTTP proxy",
        "ServeController": "Serve controller",
        "raylet": "raylet",
        "gcs_server": "GCS",
    }
    me = psutil.Process()
    totals = {"load-test clients (this script)": sum(me.cpu_times()[:2])}
    for process in me.children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            role = next((name for key, name in roles.items() if key in command), "other Ray processes")
            totals[role] = totals.get(role, 0.0) + sum(process.cpu_times()[:2])
        except psutil.Error:  # ended meanwhile
            pass
    return totals


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def deploy(settings) -> None:
    from ray import serve

    from serving.api import APP_NAME, application

    serve.run(application(settings), name=APP_NAME, route_prefix="/")


def model_info(port: int) -> dict:
    """GET /v1/model: what the API serves (precision and why, backend)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("GET", "/v1/model")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def label_counts() -> dict:
    """The per-label prediction counter (ray_sentiment_predictions) from this node's Prometheus endpoint; Ray
    exports every few seconds, so this can lag the last requests."""
    import urllib.request

    import ray

    port = ray.nodes()[0].get("MetricsExportPort")
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as page:
            lines = page.read().decode().splitlines()
    except OSError as error:
        return {"unavailable": str(error)}
    counts = {}
    for line in lines:
        if line.startswith("ray_sentiment_predictions") and 'label="' in line:
            label = line.split('label="', 1)[1].split('"', 1)[0]
            counts[label] = counts.get(label, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def main(args: argparse.Namespace) -> dict:
    import pandas as pd
    import ray
    from ray import serve

    from serving.predictors import load_predictor

    config = load_config(args.config)
    settings = dataclasses.replace(
        config.settings,
        replicas=1,
        cpus_per_replica=args.cpus_per_replica,
        **({"model": str(args.model.resolve())} if args.model else {}),
    ).checked()
    frame = pd.read_parquet(args.data / "train.parquet", columns=["text"])
    texts = frame.sample(min(args.reviews, len(frame)), random_state=0)["text"].tolist()
    cpus = max(os.cpu_count() or 1, math.ceil(args.cpus_per_replica))
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=cpus)
    port = free_port()
    serve.start(http_options={"host": HOST, "port": port})
    record = {"settings": dataclasses.asdict(settings), "reviews": len(texts), "duration_s": args.duration}
    try:
        deploy(settings)
        concurrent_clients(port, texts, 4, min(args.duration, 3.0), args.request_timeout)  # warm-up, not recorded
        record["clients"] = []
        for count in CLIENT_COUNTS:
            before_cpu = cpu_seconds_by_role()
            record["clients"].append(concurrent_clients(port, texts, count, args.duration, args.request_timeout))
            after_cpu = cpu_seconds_by_role()
            record["clients"][-1]["cpu_seconds_by_role"] = {
                role: round(after_cpu[role] - before_cpu.get(role, 0.0), 1) for role in sorted(after_cpu)
            }
        record["served"] = {key: model_info(port).get(key) for key in ("precision", "precision_reason", "backend")}
        predictor = load_predictor(settings.model_dir, settings.device, settings.precision)
        started = time.perf_counter()
        predictor.predict(texts, batch_size=32)
        in_process = len(texts) / (time.perf_counter() - started)
        api_best = max(step["reviews_per_s"] for step in record["clients"])
        record["in_process"] = {
            "reviews_per_s": round(in_process, 2),
            "api_saturated_reviews_per_s": api_best,
            "api_over_in_process": round(api_best / in_process, 3),
        }
        del predictor
        deploy(dataclasses.replace(settings, batching=False))
        unbatched = concurrent_clients(port, texts, 32, args.duration, args.request_timeout)
        batched = record["clients"][-1]
        record["unbatched"] = {
            "unbatched_32_clients": unbatched,
            "batched_over_unbatched": round(batched["reviews_per_s"] / max(unbatched["reviews_per_s"], 1e-9), 3),
        }
        deploy(settings)
        concurrent_clients(port, texts, 4, min(args.duration, 3.0), args.request_timeout)
        time.sleep(SETTLE_S)
        before = ray_rss_bytes()
        count = min(4 * settings.max_queued_requests, LIMITS["burst"])
        record["burst"] = burst(port, texts, count, 1, args.request_timeout)
        time.sleep(SETTLE_S)
        after = ray_rss_bytes()
        record["burst"].update(
            ray_rss_before_mb=round(before / 2**20, 1),
            ray_rss_after_mb=round(after / 2**20, 1),
            rss_growth=round(after / before - 1, 4),
        )
        record["label_counts"] = label_counts()
    finally:
        serve.shutdown()
        ray.shutdown()
    record["checks"] = {
        "no_5xx_but_503": record["burst"]["other_5xx"] == 0,
        "no_connection_errors": record["burst"]["connection_errors"] == 0,
        "rss_within_10_percent": abs(record["burst"]["rss_growth"]) <= 0.10,
    }
    record["passed"] = all(record["checks"].values())
    return record


def machine() -> dict:
    from benchmarks.machine import describe_machine

    return describe_machine()


def print_summary(record: dict) -> None:
    for step in record["clients"]:
        print(
            f"{step['clients']:>3} clients: {step['reviews_per_s']:>8.1f} reviews/s  p50 {step['p50_ms']} ms  "
            f"p99 {step['p99_ms']} ms  {step['statuses']}"
        )
    print(f"in-process Predictor: {record['in_process']}")
    print(f"unbatched, 32 clients: {record['unbatched']}")
    print(f"burst: {record['burst']}")
    print(f"checks: {record['checks']} -> {'PASS' if record['passed'] else 'FAIL'}")


if __name__ == "__main__":
    arguments = parse_args()
    started = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_at_start": list(os.getloadavg())}
    result = {"command": " ".join(sys.argv), "machine": machine(), **started, **main(arguments)}
    result["load_average_at_end"] = list(os.getloadavg())
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(arguments.output, result)
    print_summary(result)
    print(f"Wrote {arguments.output}")
    sys.exit(0 if result["passed"] else 1)
