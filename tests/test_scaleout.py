"""Training scale-out with `accelerate launch`: training under two processes writes one adapter, from the main
process, that loads like any other. (Scoring past one process is Ray Data's: tests/test_bulk.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing, recomputed_validation_metrics
from training.model import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, SENTIMENT_CONFIG_FILE
from training.paths import PROJECT_ROOT
from webapp.harness import free_port

pytestmark = pytest.mark.slow  # several processes or 16 threads: seconds each, left out of the fast loop

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


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
