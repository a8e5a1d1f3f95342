"""The cpu-train part: train.py's samples/s on the CPU with the packaged MiniLM at each max length, the project's
settings against train.py as it was before issue 12 (PyTorch's dropout, fp32), each as a fraction of the limit."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_config import BenchConfig
from benchmarks.machine import compute_use, encoder_shape, forward_flops, limit_seconds, machine_limit
from benchmarks.timing import ratio
from benchmarks.training_runs import timed_training, training_config
from training.device import bf16_is_fast
from training.tiny_model import random_distilbert


def training_token_counts(train_config) -> list[int]:
    """Token counts of the training reviews a run with these settings sees (train.py's own split and encoding)."""
    from training import text, train
    from training.base import load_tokenizer

    texts = train.load_data(train_config).train["text"].tolist()
    ids = text.encode_texts(
        load_tokenizer(train_config.base_model), texts, train_config.max_length, train_config.truncation
    )
    return [len(sequence) for sequence in ids]


def bench_cpu_train(config: BenchConfig, workdir: Path) -> dict:
    """train.py on the CPU with the real pretrained MiniLM: the project's settings against the same run with
    PyTorch's dropout in fp32 (train.py as it was before these optimisations), at each max length."""
    import torch

    from training.base import load_base_config

    base = str(tiny_base(workdir)) if config.smoke else "minilm"
    setups = {
        "project": dict(precision="auto", cheap_cpu_dropout=True),
        "before": dict(precision="fp32", cheap_cpu_dropout=False),
    }
    if bf16_is_fast():  # the project's settings without bf16: what a CPU without AMX runs
        setups["project_fp32"] = dict(precision="fp32", cheap_cpu_dropout=True)
    shape = encoder_shape(load_base_config(base))
    limit = machine_limit(shape, limit_seconds(config))
    result = {
        "device": "CPU" + (" (smoke size: checks the code path, not the speed)" if config.smoke else ""),
        "base_model": base,
        "steps": config.cpu_train_steps,
        "batch_size": config.train_batch_size,
        "setups": setups,
        "machine_limit": limit,
        "lengths": {},
    }
    reviews = config.cpu_train_steps * config.train_batch_size
    for max_length in config.cpu_train_lengths:
        # Training FLOPs: the forward pass and the backward pass to the activations (2 x forward); the frozen
        # base weights need no gradient, and the LoRA and head gradients are small.
        runs = {
            name: training_config(
                config, base, workdir / f"cpu_train_{name}_{max_length}", config.cpu_train_steps, max_length, settings
            )
            for name, settings in setups.items()
        }
        flops = 2 * forward_flops(shape, training_token_counts(runs["before"]))  # every setup reads the same reviews
        measured = {}
        for name, train_config in runs.items():
            summary = timed_training(train_config)
            samples_per_s = summary["train_samples_per_second"]
            measured[name] = {
                "samples_per_s": samples_per_s,
                "precision": summary["precision"],
                "run_s": summary["train_runtime_s"],
                **compute_use(reviews / samples_per_s, flops, limit, bf16=summary["precision"] == "bf16"),
            }
        before = measured["before"]["samples_per_s"]
        measured["samples_per_s_ratio"] = ratio(measured["project"]["samples_per_s"], before)
        if "project_fp32" in measured:
            measured["samples_per_s_ratio_fp32"] = ratio(measured["project_fp32"]["samples_per_s"], before)
        result["lengths"][str(max_length)] = measured
        result[f"samples_per_s_ratio_{max_length}"] = measured["samples_per_s_ratio"]
    result["threads"] = torch.get_num_threads()
    result["method"] = (
        "the Trainer's train_samples_per_second (steps x batch / training-loop time, which includes one short "
        "validation pass and a checkpoint at the end); FLOPs: 2 x the forward FLOPs of the reviews trained on, "
        "at their real token counts"
    )
    return result


def tiny_base(workdir: Path) -> Path:
    folder = workdir / "tiny_base"
    return folder if folder.exists() else random_distilbert(folder)
