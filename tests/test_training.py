"""Training end to end on a tiny DistilBERT and real IMDb reviews, and the model module's contracts."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from tests.conftest import tiny_train_config
from training import model as model_module
from training.data import DataError
from training.model import (
    LoraSettings,
    SentimentConfig,
    build_classifier,
    load_classifier,
    load_tokenizer,
    save_adapter,
)
from training.train import main, parse_args


def test_training_writes_a_complete_self_describing_adapter(tiny_adapter, tiny_distilbert):
    files = {path.name for path in tiny_adapter.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "sentiment_config.json",
        "metrics.json",
        "tokenizer.json",
    } <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pkl"))]

    config = SentimentConfig.load(tiny_adapter)
    assert (config.base_model, config.max_length, config.truncation) == (str(tiny_distilbert), 128, "head_tail")
    assert config.labels == ("NEGATIVE", "POSITIVE")

    validation = json.loads((tiny_adapter / "metrics.json").read_text())["validation"]
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "expected_calibration_error"):
        assert 0.0 <= validation[key] <= 1.0, key
    assert validation["num_examples"] == 40  # 10% of the 400 training reviews, held out


def test_head_is_saved_and_logits_reload_exactly(tiny_distilbert, tmp_path):
    torch.manual_seed(1)
    classifier = build_classifier(str(tiny_distilbert), LoraSettings(rank=4, alpha=8, targets="all-linear"))
    # Move every trainable weight away from its initial value, as training would.
    with torch.no_grad():
        for parameter in classifier.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    classifier.eval()
    tokenizer = load_tokenizer(str(tiny_distilbert))
    batch = tokenizer(["A fine film.", "Dull and far too long."], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = classifier(**batch).logits
    save_adapter(classifier, tokenizer, tmp_path, SentimentConfig(str(tiny_distilbert), 128, "head_tail"))

    exact, _, _ = load_classifier(tmp_path, merge=False)
    merged, _, _ = load_classifier(tmp_path, merge=True)
    with torch.no_grad():
        assert torch.equal(exact(**batch).logits, expected)
        assert torch.allclose(merged(**batch).logits, expected, atol=1e-5)


def test_lora_targets_follow_the_architecture(tiny_distilbert):
    attention = build_classifier(str(tiny_distilbert), LoraSettings(rank=2, targets="attention"))
    adapted = {name.rsplit(".", 2)[-2] for name, _ in attention.named_modules() if name.endswith("lora_A")}
    assert adapted == {"q_lin", "k_lin", "v_lin", "out_lin"}
    every = build_classifier(str(tiny_distilbert), LoraSettings(rank=2, targets="all-linear"))
    adapted = {name.rsplit(".", 2)[-2] for name, _ in every.named_modules() if name.endswith("lora_A")}
    assert adapted == {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"}
    # The new head (pre_classifier + classifier) trains in full; the encoder stays frozen.
    trainable = {name for name, p in every.named_parameters() if p.requires_grad and "lora_" not in name}
    assert trainable and all("classifier" in name for name in trainable)


def test_bert_targets_skip_nothing_and_touch_no_head():
    import re

    attention, every = model_module.LORA_TARGETS["bert"]
    assert re.fullmatch(every, "bert.encoder.layer.0.intermediate.dense")
    assert re.fullmatch(attention, "bert.encoder.layer.3.attention.output.dense")
    assert not re.fullmatch(attention, "bert.encoder.layer.3.output.dense")
    assert not re.fullmatch(every, "classifier")


def test_failed_run_leaves_the_previous_adapter_untouched(tiny_distilbert, small_imdb, tmp_path, monkeypatch):
    previous = tmp_path / "adapter"
    previous.mkdir()
    (previous / "adapter_model.safetensors").write_bytes(b"the adapter that was there before")

    def crash_midway(model, tokenizer, folder, config, metrics=None):
        (folder / "adapter_model.safetensors").write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr("training.train.save_adapter", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        main(tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_steps=2, eval_steps=2))
    assert (previous / "adapter_model.safetensors").read_bytes() == b"the adapter that was there before"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".adapter")] == []


def test_settings_are_checked_before_anything_loads(tmp_path):
    config = parse_args(
        ["--truncation", "head", "--max-length", "4", "--validation-fraction", "1.5", "--data", str(tmp_path)]
    )
    with pytest.raises(DataError) as error:
        main(config)
    message = str(error.value)
    assert "--max-length" in message and "--validation-fraction" in message


def test_max_length_beyond_the_base_model_is_refused(tiny_distilbert, small_imdb, tmp_path):
    with pytest.raises(DataError, match="exceeds what the base model supports"):
        main(tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_length=1024))


def test_unreachable_hub_fails_fast_with_the_offline_options(tmp_path, capsys):
    import time

    from training.train import cli

    started = time.time()
    code = cli(["--base-model", "distilbert-base-uncased", "--data", str(tmp_path / "nowhere.parquet")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err
    started = time.time()
    with pytest.raises(model_module.ModelLoadError, match="--base-model minilm"):
        load_tokenizer("distilbert-base-uncased")
    assert time.time() - started < 10


def test_unreachable_hub_is_detected_without_the_offline_flag(monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # loopback port with nothing listening
    started = time.time()
    with pytest.raises(model_module.ModelLoadError, match="127.0.0.1 cannot be reached"):
        model_module.check_hub_reachable("base model 'x'", fix="Use --base-model minilm.")
    assert time.time() - started < 5


def test_packaged_base_records_a_portable_id():
    assert model_module.portable_base_id("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    source = model_module.resolve_base_source("sentence-transformers/all-MiniLM-L6-v2")
    assert source.endswith("model") and (model_module.Path(source) / "model.safetensors").exists()


def test_warmup_is_a_share_of_all_steps():
    from training.train import TrainConfig, warmup_steps

    config = TrainConfig(batch_size=10, epochs=2, warmup_fraction=0.1)
    assert warmup_steps(config, 95) == math.floor(0.1 * 20)


def test_resume_continues_from_the_last_checkpoint(tiny_distilbert, small_imdb, tmp_path):
    first = tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_steps=4, eval_steps=4)
    main(first)
    assert (tmp_path / "results" / "checkpoint-4").is_dir()
    resumed = dataclasses.replace(first, max_steps=8, resume=True)
    summary = main(resumed)
    state = json.loads((tmp_path / "results" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and summary["validation"]["num_examples"] == 40
    with pytest.raises(DataError, match="no checkpoint"):
        main(dataclasses.replace(first, results_dir=str(tmp_path / "empty"), resume=True))
