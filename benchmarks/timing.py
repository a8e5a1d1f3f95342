"""What every benchmark part measures with: interleaved throughput and single-review latency over the same
reviews for every system, their summaries and ratios, the sample of reviews itself, and quiet output."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def latency_summary(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
        "mean_ms": round(float(values.mean()), 1),
        "count": len(values),
    }


def accuracy(labels, positive_probability) -> float:
    return float(np.mean((np.asarray(positive_probability) > 0.5) == (np.asarray(labels) == 1)))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def interleaved(systems: dict[str, Callable[[list[str]], list[float]]], texts: list[str], rounds: int) -> dict:
    """Each system scores every text, in `rounds` chunks taken in turn (order rotating), so a change in
    background load during the run falls on every system alike. Returns seconds and P(positive) per system."""
    seconds = {name: 0.0 for name in systems}
    scores = {name: [] for name in systems}
    names = list(systems)
    for index, chunk in enumerate(np.array_split(np.arange(len(texts)), rounds)):
        part = [texts[i] for i in chunk]
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            scores[name].extend(systems[name](part))
            seconds[name] += time.perf_counter() - started
    return {name: {"seconds": seconds[name], "positive_probability": scores[name]} for name in systems}


def single_latencies(systems: dict[str, Callable[[str], object]], texts: list[str]) -> dict[str, list[float]]:
    """Seconds per single-review call; each review goes to every system in turn (order rotating)."""
    timings = {name: [] for name in systems}
    names = list(systems)
    for index, text in enumerate(texts):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            systems[name](text)
            timings[name].append(time.perf_counter() - started)
    return timings


def sample_reviews(data_dir: str | Path, count: int, seed: int):
    """A fixed sample of the IMDb test split: the same reviews for every system (as the README's command draws them)."""
    import pandas as pd

    frame = pd.read_parquet(Path(data_dir) / "test.parquet", columns=["text", "label"])
    return frame.sample(min(count, len(frame)), random_state=seed).reset_index(drop=True)


@contextlib.contextmanager
def quiet():
    """Keep training's progress bars and logs out of the benchmark's table."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def thread_environment(threads: int | None) -> dict:
    """Environment that gives a subprocess's PyTorch `threads` CPU threads ({} for its default)."""
    return {} if threads is None else {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
