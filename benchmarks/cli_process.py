"""The cli part: whole processes as a user runs them, imports and model loading included:
`inference/predict.py --file` against benchmarks/pipeline_baseline.py on the same CSV of reviews."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_config import BenchConfig
from benchmarks.timing import ratio, sample_reviews, thread_environment
from training.paths import PROJECT_ROOT


def bench_cli(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """Whole processes as a user runs them, model loading included, on the same CSV of reviews."""
    import pandas as pd

    reviews = sample_reviews(config.data, config.reviews, config.seed)
    source = workdir / f"reviews_{len(reviews)}.csv"
    reviews.to_csv(source, index=False)
    commands = {
        "predict_cli": [
            sys.executable,
            "inference/predict.py",
            "--file",
            str(source),
            "--output",
            str(workdir / "predict_cli.csv"),
            "--model",
            str(model_dir),
            "--device",
            "cpu",
        ],
        "pipeline_script": [
            sys.executable,
            "benchmarks/pipeline_baseline.py",
            "--file",
            str(source),
            "--output",
            str(workdir / "pipeline_script.csv"),
            "--model",
            str(model_dir),
            "--batch-size",
            str(config.pipeline_batch_size),
            "--device",
            "cpu",
        ],
    }
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **thread_environment(config.threads)}
    result = {"reviews": len(reviews), "commands": {name: shlex.join(command) for name, command in commands.items()}}
    for name in ("pipeline_script", "predict_cli"):
        started = time.perf_counter()
        done = subprocess.run(commands[name], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(commands[name])} exited {done.returncode}: {done.stderr[-2000:]}")
        output = pd.read_csv(workdir / f"{name}.csv", keep_default_na=False)
        result[name] = {
            "wall_s": round(wall_s, 2),
            "reviews_per_s": round(len(reviews) / wall_s, 2),
            "accuracy": round(float(np.mean((output["predicted_label"] == "POSITIVE") == (output["label"] == 1))), 4),
        }
    result["wall_time_ratio"] = ratio(result["predict_cli"]["wall_s"], result["pipeline_script"]["wall_s"])
    result["speedup"] = ratio(result["pipeline_script"]["wall_s"], result["predict_cli"]["wall_s"])
    return result
