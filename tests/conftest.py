"""Shared fixtures: slices of the real IMDb data, a tiny randomly initialised DistilBERT, and an
adapter trained on it in seconds. Everything runs offline on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT

IMDB_DIR = Path(os.environ.get("IMDB_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "imdb"))
SHIPPED_MODEL_DIR = DEFAULT_MODEL_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_imdb() -> Path:
    if not (IMDB_DIR / "train.parquet").exists():
        pytest.skip(f"IMDb parquet files not found in {IMDB_DIR}; set IMDB_DATA_DIR")
    return IMDB_DIR


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    return require_imdb()


@pytest.fixture(scope="session")
def small_imdb(tmp_path_factory, imdb_dir) -> Path:
    """A folder shaped like the real one: 400 training and 120 test reviews, balanced, fixed seed."""
    from training.data import stratified_subset

    folder = tmp_path_factory.mktemp("small_imdb")
    for split, size in (("train", 400), ("test", 120)):
        frame = pd.read_parquet(imdb_dir / f"{split}.parquet", columns=["text", "label"])
        stratified_subset(frame, size, seed=0).to_parquet(folder / f"{split}.parquet")
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    """A 2-layer, width-32 DistilBERT with random weights and the real uncased WordPiece vocabulary."""
    from training.tiny_model import TINY_DISTILBERT_SHAPE, random_distilbert

    return random_distilbert(tmp_path_factory.mktemp("tiny_distilbert"), TINY_DISTILBERT_SHAPE)


def tiny_train_config(base: Path, data: Path, tmp_path: Path, **overrides):
    from training.train import TrainConfig

    settings = dict(
        base_model=str(base),
        data=str(data),
        output_dir=str(tmp_path / "adapter"),
        results_dir=str(tmp_path / "results"),
        max_length=128,
        epochs=1,
        max_steps=12,
        batch_size=16,
        eval_batch_size=64,
        learning_rate=1e-3,
        lora_rank=4,
        lora_alpha=8,
        logging_steps=4,
        eval_steps=6,
    )
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_distilbert, small_imdb) -> Path:
    """An adapter trained by training/train.py on the tiny DistilBERT; shared by read-only tests."""
    from training.train import main

    folder = tmp_path_factory.mktemp("tiny_run")
    config = tiny_train_config(tiny_distilbert, small_imdb, folder)
    main(config)
    return Path(config.output_dir)
