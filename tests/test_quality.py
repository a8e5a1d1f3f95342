"""Quality with real pretrained weights: the shipped adapter on a fixed sample of the IMDb test split,
and a short LoRA run on the packaged all-MiniLM-L6-v2 base."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import SHIPPED_MODEL_DIR, tiny_train_config
from training.data import stratified_subset

SAMPLE_SIZE = 300
# The shipped adapter's figures on that fixed sample, measured with this test's own code (fp32 on the CPU:
# Predictor.from_pretrained(trained_model, device="cpu"), the path the app and the CLI take): 278 of 300
# right, F1 0.9286, ECE 0.0328 with the temperature saved with the adapter (1.7696). They are pinned here,
# not read from trained_model/metrics.json, which train.py and evaluate.py --record rewrite: a worse
# adapter must not lower its own bar.
PINNED = {"accuracy": 278 / 300, "f1": 0.928571, "expected_calibration_error": 0.032849}
PINNED_TEMPERATURE = 1.769602
# Half a point: more than one review (0.33 points), less than two. fp32 on the CPU is deterministic on one
# machine; on another the matrix kernels (AVX2 against AVX-512, other thread counts) sum in another order
# and move probabilities by about 1e-6, which could flip at most a review sitting at 0.5. A whole point was
# the first choice, but measured on this sample it misses real regressions: head-only truncation scores
# 276/300 with ECE 0.0414 (+0.86 points), 256 tokens 276/300 with ECE 0.0429, int8 as the CPU default
# 277/300 with ECE 0.0462 (+1.34 points). At half a point each of them fails (int8 on its ECE).
TOLERANCE = 0.005


@pytest.mark.slow
def test_shipped_adapter_keeps_its_pinned_figures_on_a_fixed_sample(imdb_dir, shipped_predictor):
    from training.metrics import classification_metrics

    sample = stratified_subset(
        pd.read_parquet(imdb_dir / "test.parquet", columns=["text", "label"]), SAMPLE_SIZE, seed=0
    )
    metrics = classification_metrics(
        sample["label"].to_numpy(), shipped_predictor.predict_proba(sample["text"].tolist())
    )
    print(
        f"shipped adapter on {SAMPLE_SIZE} test reviews: "
        + ", ".join(f"{key} {metrics[key]:.4f} (pinned {value:.4f})" for key, value in PINNED.items())
    )
    for key, value in PINNED.items():
        assert metrics[key] == pytest.approx(value, abs=TOLERANCE), key
    assert shipped_predictor.temperature == pytest.approx(PINNED_TEMPERATURE, abs=TOLERANCE)
    assert (shipped_predictor.precision, shipped_predictor.config.max_length) == ("fp32", 512)


@pytest.mark.slow
def test_short_lora_run_on_the_packaged_base_beats_chance(small_imdb, tmp_path):
    from training.train import main

    # 40 steps at 128 tokens: about what a CPU test can afford; the real recipe is in the model card. At
    # 64 tokens, 3e-3 and no warm-up, one seed in 16 collapsed to one label (0.5) with either dropout
    # (the cheaper one: seed 42, this test's; PyTorch's: seed 15); these settings gave 0.75 to 0.78 on
    # seeds 42, 1 and 2 (docs/speed.md#cpu-training).
    config = tiny_train_config(
        "minilm",
        small_imdb,
        tmp_path,
        max_length=128,
        max_steps=40,
        eval_steps=40,
        batch_size=16,
        learning_rate=2e-3,
        warmup_fraction=0.1,
        lora_rank=8,
        lora_alpha=16,
        validation_fraction=0.25,
    )
    validation = main(config)["validation"]
    print(f"MiniLM after 40 steps on 300 reviews: validation accuracy {validation['accuracy']:.3f}")
    # 100 held-out reviews: chance is 0.5 with a standard error of 0.05; 0.65 is three of those above it.
    assert validation["num_examples"] == 100
    assert validation["accuracy"] >= 0.65


def test_shipped_adapter_loads_with_plain_peft_and_matches_the_predictor():
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from inference.predictor import Predictor
    from training.base import resolve_base_source
    from training.model import SentimentConfig

    assert (SHIPPED_MODEL_DIR / "adapter_model.safetensors").stat().st_size < 10 * 2**20
    assert not list(SHIPPED_MODEL_DIR.glob("*.bin"))
    base_id = SentimentConfig.load(SHIPPED_MODEL_DIR).base_model
    assert base_id == "sentence-transformers/all-MiniLM-L6-v2"  # portable, not a path on one machine
    base = AutoModelForSequenceClassification.from_pretrained(resolve_base_source(base_id), num_labels=2)
    model = PeftModel.from_pretrained(base, SHIPPED_MODEL_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_MODEL_DIR)
    texts = ["A wonderful, moving film.", "Awful, boring and far too long."]
    with torch.no_grad():
        plain = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    exact = Predictor.from_pretrained(SHIPPED_MODEL_DIR, device="cpu", precision="fp32", calibrated=False)
    ours = exact.predict_proba(texts)
    assert abs(plain - ours).max() < 1e-4
    assert plain[0].argmax() == 1 and plain[1].argmax() == 0
