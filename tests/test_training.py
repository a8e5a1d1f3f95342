"""Training end to end on a tiny DistilBERT and real IMDb reviews, and the model module's contracts."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import recomputed_validation_metrics, tiny_train_config
from training import base as base_module
from training import model as model_module
from training.base import load_tokenizer
from training.config import parse_args
from training.errors import DataError, ModelLoadError
from training.model import LoraSettings, SentimentConfig, build_classifier, load_classifier, save_adapter
from training.train import main


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
    assert validation["num_examples"] == 40  # 10% of the 400 training reviews, held out
    # The recorded figures are the published adapter's on that split: computed again from scratch (split
    # rebuilt from the record, the Predictor's merged fp32 model, scikit-learn), they agree. The Trainer
    # scores the unmerged model, so the logits differ in the last bits: the AUC is compared to 1e-4.
    recomputed = recomputed_validation_metrics(tiny_adapter)
    assert recomputed["num_examples"] == 40
    assert (validation["accuracy"], validation["f1"]) == (recomputed["accuracy"], recomputed["f1"])
    assert validation["roc_auc"] == pytest.approx(recomputed["roc_auc"], abs=1e-4)


def test_the_validation_block_says_how_it_was_scored_and_which_epoch_it_kept(tiny_adapter):
    from training.device import bf16_is_fast

    validation = json.loads((tiny_adapter / "metrics.json").read_text())["validation"]
    # The Trainer's own pass over validation: the raw softmax, in the precision 'auto' trains in here.
    assert validation["temperature"] == 1.0
    assert validation["numeric_precision"] == ("bf16" if torch.cuda.is_available() or bf16_is_fast() else "fp32")
    # The checkpoint kept is the first with the best validation accuracy, as the Trainer's own log has it.
    (state,) = [
        json.loads(path.read_text())
        for path in (tiny_adapter.parent / "results").glob("checkpoint-*/trainer_state.json")
        if json.loads(path.read_text())["global_step"] == 12
    ]
    evaluations = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    assert len(evaluations) == 2  # at steps 6 and 12
    assert validation["best_epoch"] == max(evaluations, key=lambda entry: entry["eval_accuracy"])["epoch"]


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


def no_connection(*args, **kwargs):
    raise AssertionError("a connection to the hub was attempted")


def test_offline_loading_fails_without_touching_the_network(tmp_path, capsys, monkeypatch):
    from training.train import cli

    code = cli(["--base-model", "distilbert-base-uncased", "--data", str(tmp_path / "nowhere.parquet")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err
    # HF_HUB_OFFLINE is set (conftest): the refusal comes from the flag, with no connection tried at all,
    # so it cannot wait on a network however slow (the speed this used to time is the mechanism's).
    monkeypatch.setattr(base_module.socket, "create_connection", no_connection)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set.*--base-model minilm"):
        load_tokenizer("distilbert-base-uncased")


def test_the_default_hub_data_offline_names_the_local_copy(tiny_distilbert, tmp_path, capsys, monkeypatch):
    import datasets

    from training.train import cli

    monkeypatch.setattr(base_module.socket, "create_connection", no_connection)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub dataset was loaded"))
    # No --data: the default, 'hub', with HF_HUB_OFFLINE set.
    arguments = ["--base-model", str(tiny_distilbert), "--output-dir", str(tmp_path / "a"), "--results-dir"]
    assert cli([*arguments, str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: Cannot download dataset 'stanfordnlp/imdb': HF_HUB_OFFLINE is set")
    assert "Point --data at a local copy instead, for example --data ../shared/data/imdb" in error


def test_unreachable_hub_is_detected_without_the_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # loopback port with nothing listening
    probes = []
    real_connection = base_module.socket.create_connection

    def probe(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        return real_connection(address, timeout, *args, **kwargs)

    monkeypatch.setattr(base_module.socket, "create_connection", probe)
    with pytest.raises(ModelLoadError, match="127.0.0.1 cannot be reached"):
        base_module.check_hub_reachable("base model 'x'", fix="Use --base-model minilm.")
    # One probe, with a timeout of a few seconds: a hub that drops packets fails fast too, not after the
    # hub client's half-minute of retries.
    assert len(probes) == 1 and probes[0][0] == ("127.0.0.1", 9)
    assert probes[0][1] is not None and 0 < probes[0][1] <= 5


def test_packaged_base_records_a_portable_id():
    assert base_module.portable_base_id("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    source = base_module.resolve_base_source("sentence-transformers/all-MiniLM-L6-v2")
    assert source.endswith("model") and (base_module.Path(source) / "model.safetensors").exists()


def test_warmup_is_a_share_of_all_steps():
    from training.config import TrainConfig
    from training.train import warmup_steps

    config = TrainConfig(batch_size=10, epochs=2, warmup_fraction=0.1)
    assert warmup_steps(config, 95) == math.floor(0.1 * 20)


def test_resume_continues_from_the_last_checkpoint(tiny_distilbert, small_imdb, tmp_path, training_steps):
    first = tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_steps=4, eval_steps=4)
    main(first)
    assert (tmp_path / "results" / "checkpoint-4").is_dir()
    resumed = dataclasses.replace(first, max_steps=8, resume=True)
    summary = main(resumed)
    # The Trainer was handed the checkpoint and ran steps 5 to 8 only: a run that silently started again
    # would reproduce the same weights (same seed), so only the steps it ran can tell the two apart.
    # (The first run, from scratch, is recorded too.)
    assert training_steps.resumed_from == [None, str(tmp_path / "results" / "checkpoint-4")]
    assert training_steps.steps == [1, 2, 3, 4] + [5, 6, 7, 8]
    state = json.loads((tmp_path / "results" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and summary["validation"]["num_examples"] == 40
    with pytest.raises(DataError, match="no checkpoint"):
        main(dataclasses.replace(first, results_dir=str(tmp_path / "empty"), resume=True))


def test_the_published_adapter_is_the_checkpoint_best_on_validation_accuracy(
    tiny_distilbert, small_imdb, tmp_path, monkeypatch, opened_tables
):
    from safetensors.torch import load_file

    from training import train

    # Validation accuracy reported as 0.9 at step 3 and 0.1 at step 6 (the real metrics otherwise, and for
    # the final pass over the best checkpoint): the later checkpoint is the worse one.
    staged_accuracies = [0.9, 0.1]
    real_metrics = train.compute_metrics

    def staged(prediction):
        metrics = real_metrics(prediction)
        return {**metrics, "accuracy": staged_accuracies.pop(0)} if staged_accuracies else metrics

    monkeypatch.setattr(train, "compute_metrics", staged)
    # In bf16 (autocast on the CPU), so the record's precision is not the tests' fp32 default.
    config = tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_steps=6, eval_steps=3, precision="bf16")
    main(config)
    assert not staged_accuracies  # both checkpoints were judged by the staged figures
    results, published = Path(config.results_dir), load_file(Path(config.output_dir) / "adapter_model.safetensors")
    checkpoints = {step: load_file(results / f"checkpoint-{step}" / "adapter_model.safetensors") for step in (3, 6)}

    def same(weights):
        return weights.keys() == published.keys() and all(torch.equal(weights[k], published[k]) for k in published)

    assert same(checkpoints[3]) and not same(checkpoints[6])
    # Its record names the epoch of the checkpoint kept, not the one where training stopped.
    history = json.loads((results / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    (kept,) = [entry["epoch"] for entry in history if entry.get("step") == 3 and "eval_accuracy" in entry]
    validation = json.loads((Path(config.output_dir) / "metrics.json").read_text())["validation"]
    assert validation["best_epoch"] == kept < validation["epoch"]
    assert (validation["numeric_precision"], validation["temperature"]) == ("bf16", 1.0)

    # Training read its data from the training split only: the test split beside it was never opened.
    assert any(path.endswith("train.parquet") for path in opened_tables)  # the spy saw the reads
    assert not [path for path in opened_tables if Path(path).name.startswith("test.")], opened_tables


# ----------------------------------------------------------------------------- GPU settings, with CUDA mocked


@pytest.fixture
def mocked_cuda(monkeypatch):
    """torch.cuda reports a GPU (bf16-capable unless a test says otherwise); nothing runs on it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return monkeypatch


def test_precision_auto_is_bf16_or_fp16_on_a_gpu_and_bf16_on_the_cpu_only_with_bf16_hardware(mocked_cuda):
    from training import train
    from training.train import mixed_precision, resolved_precision

    assert resolved_precision("auto") == "bf16" and mixed_precision("bf16") == {"bf16": True, "fp16": False}
    assert resolved_precision("fp32") == "fp32" and mixed_precision("fp32") == {"bf16": False, "fp16": False}
    mocked_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    assert resolved_precision("auto") == "fp16" and mixed_precision("fp16") == {"bf16": False, "fp16": True}
    mocked_cuda.setattr(torch.cuda, "is_available", lambda: False)
    for hardware_bf16, expected in ((True, "bf16"), (False, "fp32")):  # an AMX Xeon; an AVX2 laptop
        mocked_cuda.setattr(train, "bf16_is_fast", lambda answer=hardware_bf16: answer)
        assert resolved_precision("auto") == expected
    # bf16 on the CPU is autocast, which the Trainer allows only when told it runs on the CPU
    assert mixed_precision("bf16") == {"bf16": True, "fp16": False, "use_cpu": True}
    with pytest.raises(ModelLoadError, match="--precision fp16 needs a GPU"):
        resolved_precision("fp16")


def test_on_a_gpu_training_asks_for_bf16_grouped_lengths_and_batches_padded_to_64(mocked_cuda, tiny_distilbert):
    import transformers

    from training import text, train
    from training.config import TrainConfig
    from training.train import collator, training_arguments

    asked, grouping = {}, train.length_grouping()  # the real flag name, found before TrainingArguments is replaced
    mocked_cuda.setattr(train, "length_grouping", lambda: grouping)
    mocked_cuda.setattr(transformers, "TrainingArguments", lambda **kwargs: asked.update(kwargs) or kwargs)
    training_arguments(TrainConfig(), 1000)
    assert (asked["bf16"], asked["fp16"]) == (True, False)
    assert asked.get("train_sampling_strategy") == "group_by_length" or asked.get("group_by_length") is True
    assert asked["dataloader_pin_memory"] is True and asked["dataloader_num_workers"] == 4
    asked.clear()
    training_arguments(TrainConfig(group_by_length=False, precision="fp32"), 1000)
    assert "train_sampling_strategy" not in asked and "group_by_length" not in asked
    assert (asked["bf16"], asked["fp16"]) == (False, False)

    tokenizer = load_tokenizer(str(tiny_distilbert))
    pad = collator(tokenizer, TrainConfig())
    assert text.GPU_LENGTH_MULTIPLE == 64 and pad.pad_to_multiple_of == 64
    batch = pad([{"input_ids": [101] + [2000] * n + [102], "labels": 1} for n in (3, 70)])
    assert batch["input_ids"].shape == (2, 128)  # 72 tokens, rounded up to a multiple of 64


def test_length_grouping_is_a_setting_this_transformers_accepts(tmp_path):
    from transformers import TrainingArguments

    from training.train import length_grouping

    grouping = length_grouping()
    assert grouping, "neither train_sampling_strategy nor group_by_length exists in this transformers"
    arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **grouping)
    ((name, value),) = grouping.items()
    assert getattr(arguments, name) == value


def test_on_the_cpu_batches_pad_to_their_longest_review(tiny_distilbert, monkeypatch):
    from training.config import TrainConfig
    from training.train import collator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pad = collator(load_tokenizer(str(tiny_distilbert)), TrainConfig())
    assert pad.pad_to_multiple_of is None
    batch = pad([{"input_ids": [101] + [2000] * n + [102], "labels": 1} for n in (3, 70)])
    assert batch["input_ids"].shape == (2, 72)
