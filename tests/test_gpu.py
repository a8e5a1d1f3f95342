"""The CUDA path against the CPU path: run by `pytest -m gpu` on a machine with a GPU (scripts/gpu_check.py).

Without CUDA every test here skips. With it, each checks one claim of the design against the exact fp32 CPU
path on the same reviews: bf16 prediction, evaluation reports, explanations, the app's device label and the
int8 refusal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_check.py on one)"),
]

SHIPPED = Path(__file__).resolve().parents[1] / "trained_model"
SAMPLE_SIZE = 500
# bf16 keeps 8 bits of mantissa: confidences move by up to about a hundredth; a review near 0.5 may flip.
MAX_LABEL_DISAGREEMENT = 0.005
MAX_PROBABILITY_DIFFERENCE = 0.02
EXPLAINED_REVIEWS = (
    "A wonderful, moving film with brilliant acting. I loved every minute of it.",
    "Dull, predictable and far too long. The worst film I have seen this year.",
    "The plot was thin, but the performances were superb and the ending was beautiful.",
)


@pytest.fixture(scope="module")
def sample_texts(imdb_dir) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    from training.data import stratified_subset

    frame = pd.read_parquet(imdb_dir / "test.parquet", columns=["text", "label"])
    sample = stratified_subset(frame, SAMPLE_SIZE, seed=0)
    return sample["text"].tolist(), sample["label"].to_numpy()


@pytest.fixture(scope="module")
def cpu_predictor():
    from inference.predictor import Predictor

    # The exact reference, whatever 'auto' serves on this CPU.
    return Predictor.from_pretrained(SHIPPED, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def gpu_predictor():
    from inference.predictor import Predictor

    return Predictor.from_pretrained(SHIPPED, device="cuda")


def test_bf16_on_cuda_agrees_with_fp32_on_cpu(sample_texts, cpu_predictor, gpu_predictor, record_property):
    texts, _ = sample_texts
    assert cpu_predictor.precision == "fp32"
    assert gpu_predictor.precision == "bf16"  # "auto" on a GPU with bf16 support
    exact = cpu_predictor.predict_proba(texts, batch_size=64)
    fast = gpu_predictor.predict_proba(texts, batch_size=128)
    disagreement = float(np.mean(exact.argmax(axis=1) != fast.argmax(axis=1)))
    largest = float(np.abs(exact - fast).max())
    figures = {"reviews": len(texts), "label_disagreement": disagreement, "max_probability_difference": largest}
    for name, value in figures.items():
        record_property(name, value)  # into the JUnit XML, where scripts/gpu_check.py reads it
    assert disagreement <= MAX_LABEL_DISAGREEMENT
    assert largest <= MAX_PROBABILITY_DIFFERENCE


def test_evaluate_on_cuda_writes_the_same_report(imdb_dir, tmp_path):
    from evaluation.evaluate import main, parse_args

    reports = {}
    for device in ("cpu", "cuda"):
        args = parse_args(
            ["--data", str(imdb_dir), "--limit", "64", "--device", device, "--output-dir", str(tmp_path / device)]
        )
        main(args)
        reports[device] = json.loads((tmp_path / device / "report.json").read_text())

    def keys(value, prefix=""):
        if isinstance(value, dict):
            return {f"{prefix}{key}" for key in value} | {
                k for key, v in value.items() for k in keys(v, f"{prefix}{key}.")
            }
        return set()

    assert keys(reports["cuda"]) == keys(reports["cpu"])
    assert reports["cuda"]["speed"]["device"] == f"GPU: {torch.cuda.get_device_name(0)}"
    assert reports["cuda"]["model"]["precision"] == "bf16"
    assert abs(reports["cuda"]["metrics"]["accuracy"] - reports["cpu"]["metrics"]["accuracy"]) <= 2 / 64


def test_explanations_on_cuda_name_the_same_top_words(cpu_predictor, gpu_predictor):
    for text in EXPLAINED_REVIEWS:
        on_cpu, on_gpu = cpu_predictor.explain(text), gpu_predictor.explain(text)
        assert on_gpu.label == on_cpu.label
        for direction in ("positive", "negative"):
            cpu_words = [word.word for word in on_cpu.top(3, direction)]
            gpu_words = [word.word for word in on_gpu.top(3, direction)]
            assert gpu_words == cpu_words, (text, direction, cpu_words, gpu_words)
        # Both attribute in fp32 (a bf16 predictor explains with an fp32 copy): the scores agree closely.
        cpu_scores = np.array([word.score for word in on_cpu.words])
        gpu_scores = np.array([word.score for word in on_gpu.words])
        assert np.allclose(gpu_scores, cpu_scores, atol=0.02 * np.abs(cpu_scores).max())


def test_device_label_names_the_gpu(gpu_predictor):
    # The app's sidebar and result captions show Predictor.info()["device"].
    name = torch.cuda.get_device_name(0)
    assert gpu_predictor.info()["device"] == f"GPU: {name}"
    assert gpu_predictor.device_name == f"GPU: {name}"


def test_int8_on_cuda_is_one_line_error():
    result = subprocess.run(
        [sys.executable, "inference/predict.py", "--device", "cuda", "--precision", "int8", "A fine film."],
        capture_output=True,
        text=True,
        cwd=SHIPPED.parent,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: int8 (dynamic quantization) runs on the CPU only; use --precision bf16 or fp32 on a GPU."]
