"""Scale-out with `accelerate launch`: batch prediction split across two CPU processes gives the same
output as one process, and training under two processes writes one adapter, from the main process,
that loads like any other. The shard arithmetic is tested directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference import distributed
from inference.app_server import free_port
from inference.predict import cli
from tests.conftest import PROJECT_ROOT, missing, recomputed_validation_metrics
from training.model import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, SENTIMENT_CONFIG_FILE

pytestmark = pytest.mark.slow  # several processes or 16 threads: seconds each, left out of the fast loop

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
# fp32 probabilities from two processes match one process's to float rounding; a batch padded
# differently changes the last bits of the logits, so allow a little more than the 6 decimals written.
PROBABILITY_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------- pure helpers


@given(num_rows=st.integers(0, 500), num_shards=st.integers(1, 16))
def test_shards_are_contiguous_balanced_and_cover_every_row_once(num_rows, num_shards):
    shares = [distributed.shard_range(num_rows, num_shards, index) for index in range(num_shards)]
    assert [row for share in shares for row in share] == list(range(num_rows))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_shard_that_does_not_exist_is_refused():
    with pytest.raises(ValueError):
        distributed.shard_range(10, 2, 2)


def test_shards_are_read_back_in_the_order_given(tmp_path):
    rows = [{"predicted_label": label, "confidence": 0.5 + i / 10, "error": ""} for i, label in enumerate("ABC")]
    paths = [distributed.shard_path(tmp_path / "out.csv", index, 2) for index in range(2)]
    distributed.write_shard(rows[:2], paths[0])
    distributed.write_shard(rows[2:], paths[1])
    assert distributed.read_shards(paths) == rows
    assert distributed.read_shards(paths[::-1]) == rows[2:] + rows[:2]
    assert all(path.parent == tmp_path and path.name.startswith(".out.csv.shard-") for path in paths)


# ----------------------------------------------------------------------------- accelerate launch, 2 CPU processes


def accelerate_launch(script: str, *arguments: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch --num_processes 2 --cpu script arguments`, as the README shows it."""
    if ACCELERATE is None:
        missing("the accelerate command is not installed")
    command = [
        ACCELERATE,
        "launch",
        "--num_processes",
        "2",
        "--cpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        script,
        *arguments,
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_prediction_split_across_two_processes_equals_one_process(tiny_adapter, small_imdb, tmp_path):
    reviews = pd.read_parquet(small_imdb / "test.parquet").head(41)  # odd: the shares differ in size
    reviews["review_id"] = [f"r{i:03d}" for i in range(len(reviews))]
    reviews.loc[7, "text"] = "   "  # an empty row is flagged in place, in whichever share it falls
    reviews.to_csv(tmp_path / "reviews.csv", index=False)
    common = [
        "--file",
        str(tmp_path / "reviews.csv"),
        "--model",
        str(tiny_adapter),
        "--precision",
        "fp32",
        "--batch-size",
        "8",
    ]

    assert cli([*common, "--output", str(tmp_path / "one.csv")]) == 0
    launched = accelerate_launch("inference/predict.py", *common, "--output", str(tmp_path / "two.csv"))
    assert launched.stderr.count("Wrote 41 predictions") == 1  # the main process merges and writes, once

    one, two = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    assert list(two.columns) == list(one.columns)
    assert two["review_id"].tolist() == one["review_id"].tolist() == reviews["review_id"].tolist()
    pd.testing.assert_frame_equal(
        two.drop(columns=["p_negative", "p_positive", "confidence"]),
        one.drop(columns=["p_negative", "p_positive", "confidence"]),
    )
    for column in ("p_negative", "p_positive", "confidence"):
        assert (two[column] - one[column]).abs().max() <= PROBABILITY_TOLERANCE, column
    assert two.loc[7, "error"] == "empty text"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one.csv", "reviews.csv", "two.csv"]  # shards removed


def test_training_under_two_processes_writes_one_adapter_like_a_single_process_run(
    tiny_distilbert, small_imdb, tiny_adapter, tmp_path
):
    run = tmp_path / "run"
    accelerate_launch(
        "training/train.py",
        "--base-model",
        str(tiny_distilbert),
        "--data",
        str(small_imdb),
        "--output-dir",
        str(run / "adapter"),
        "--results-dir",
        str(run / "results"),
        "--train-limit",
        "64",
        "--validation-limit",
        "32",
        "--max-length",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        "4",
        "--eval-steps",
        "4",
        "--logging-steps",
        "2",
        "--lora-rank",
        "4",
        "--lora-alpha",
        "8",
    )
    adapter = run / "adapter"
    # Only the main process writes: one adapter, and no half-written or retired copy from a second writer.
    assert sorted(path.name for path in run.iterdir()) == ["adapter", "results"]
    assert (run / "results" / "train_results.json").exists()
    single_process_files = sorted(path.name for path in tiny_adapter.iterdir())
    assert sorted(path.name for path in adapter.iterdir()) == single_process_files
    for name in (ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, SENTIMENT_CONFIG_FILE):
        assert name in single_process_files
    saved = json.loads((adapter / SENTIMENT_CONFIG_FILE).read_text())
    assert saved.keys() == json.loads((tiny_adapter / SENTIMENT_CONFIG_FILE).read_text()).keys()
    assert saved["max_length"] == 64
    # The validation figures recorded by the main process describe the weights it wrote: the 32 validation
    # reviews (evaluated half by each process, gathered) scored again by the written adapter agree.
    recorded = json.loads((adapter / "metrics.json").read_text())["validation"]
    recomputed = recomputed_validation_metrics(adapter)
    assert recorded["num_examples"] == recomputed["num_examples"] == 32
    assert (recorded["accuracy"], recorded["f1"]) == (recomputed["accuracy"], recomputed["f1"])
    assert recorded["roc_auc"] == pytest.approx(recomputed["roc_auc"], abs=1e-4)
