"""What a benchmark run measures and on how much: the parts it can run and their sizes, with the smaller ones
--smoke uses. benchmark.py reads them from its command line; every part takes them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from training.paths import PROJECT_ROOT

DEFAULT_DATA_DIR = Path(os.environ.get("IMDB_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "imdb"))
PARTS = ("inference", "cpu-table", "cli", "app", "cpu-train", "gpu-train", "gpu-inference", "onnx")


@dataclasses.dataclass
class BenchConfig:
    """What to measure and on how much; --smoke shrinks every size so the whole run takes seconds."""

    parts: tuple[str, ...] = PARTS
    model: str | None = None  # adapter folder; None: the shipped one (a tiny one trained here under --smoke)
    data: str = str(DEFAULT_DATA_DIR)
    reviews: int = 1000
    latency_reviews: int = 100
    rounds: int = 5
    seed: int = 0
    batch_size: int = 32
    pipeline_batch_size: int = 1
    app_requests: int = 20
    gpu_reviews: int = 10_000
    gpu_batch_size: int = 256
    gpu_pipeline_batch_size: int = 64
    cpu_train_steps: int = 8
    cpu_train_lengths: tuple[int, ...] = (256, 512)
    train_steps: int = 200
    train_batch_size: int = 32
    train_max_length: int = 512
    threads: int | None = None  # None: PyTorch's default (one per core)
    smoke: bool = False
    output: str | None = None

    def shrunk_for_smoke(self) -> BenchConfig:
        return dataclasses.replace(
            self,
            reviews=20,
            latency_reviews=5,
            rounds=2,
            app_requests=3,
            gpu_reviews=20,
            gpu_batch_size=8,
            gpu_pipeline_batch_size=4,
            cpu_train_steps=2,
            cpu_train_lengths=(64,),
            train_steps=2,
            train_batch_size=4,
            train_max_length=64,
        )
