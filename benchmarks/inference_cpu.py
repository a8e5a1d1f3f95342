"""The inference part: in one process on the CPU, the Predictor at its default precision (bf16 on a CPU with
AMX; int8 on one with AVX2 or VNNI when the adapter's int8 scheme passed its gate; else fp32), exact fp32 and
int8 against transformers.pipeline on the same model and reviews."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.bench_config import BenchConfig
from benchmarks.machine import compute_use, flop_count, limit_seconds, machine_limit
from benchmarks.timing import accuracy, interleaved, latency_summary, ratio, sample_reviews, single_latencies
from inference.int8 import MAX_ACCURACY_DROP_POINTS


def bench_inference(config: BenchConfig, model_dir: Path) -> dict:
    """In-process CPU inference: the Predictor at its default precision (inference.predictor.choose_precision),
    exact fp32 and int8 (the adapter's scheme), against the pipeline on the same reviews."""
    from benchmarks.pipeline_baseline import load_pipeline, pipeline_positive_probability
    from inference.predictor import Predictor, choose_precision
    from inference.torch_backend import TorchBackend
    from training.base import quiet_loading

    reviews = sample_reviews(config.data, config.reviews, config.seed)
    texts, labels = reviews["text"].tolist(), reviews["label"].to_numpy()
    scheme = TorchBackend.int8_scheme(model_dir)
    default_precision, reason = choose_precision("auto", "cpu", scheme=scheme)  # what users get by default, and why
    loaders = {
        "predictor": lambda: Predictor.from_pretrained(model_dir, device="cpu", precision=default_precision),
        "predictor_fp32": lambda: Predictor.from_pretrained(model_dir, device="cpu", precision="fp32"),
        "predictor_int8": lambda: Predictor.from_pretrained(model_dir, device="cpu", precision="int8"),
        "pipeline": lambda: load_pipeline(model_dir, device="cpu", batch_size=config.pipeline_batch_size),
    }
    if default_precision in ("fp32", "int8"):  # the default is one of the others: loaded and measured once
        del loaders["predictor_fp32" if default_precision == "fp32" else "predictor_int8"]
    loaded, load_s = {}, {}
    for name, load in loaders.items():
        started = time.perf_counter()
        with quiet_loading():  # the fresh-head notice a user cannot act on
            loaded[name] = load()
        load_s[name] = round(time.perf_counter() - started, 2)
    classify = loaded.pop("pipeline")
    batch = {
        name: (lambda part, p=predictor: p.predict_proba(part, batch_size=config.batch_size)[:, 1].tolist())
        for name, predictor in loaded.items()
    }
    batch["pipeline"] = lambda part: pipeline_positive_probability(classify(part))
    one = {name: predictor.predict_one for name, predictor in loaded.items()}
    one["pipeline"] = classify  # one string in, as a notebook calls it
    single_latencies(one, texts[:1])  # warm-up: first-call set-up is not part of serving
    throughput = interleaved(batch, texts, config.rounds)
    latencies = single_latencies(one, texts[: config.latency_reviews])
    for twin in ("predictor_fp32", "predictor_int8"):
        if twin not in batch:
            throughput[twin], latencies[twin], load_s[twin] = (
                throughput["predictor"],
                latencies["predictor"],
                load_s["predictor"],
            )

    flops = flop_count(loaded["predictor"], texts)
    limit = machine_limit(flops["model_shape"], limit_seconds(config))
    precisions = {
        "predictor": default_precision,
        "predictor_fp32": "fp32",
        "predictor_int8": "int8",
        "pipeline": "fp32",
    }
    systems = {}
    for name, precision in precisions.items():
        scores = throughput[name]["positive_probability"]
        systems[name] = {
            "precision": precision,
            "reviews_per_s": round(len(texts) / throughput[name]["seconds"], 2),
            "latency": latency_summary(latencies[name]),
            "accuracy": round(accuracy(labels, scores), 4),
            "load_s": load_s[name],
            **compute_use(
                throughput[name]["seconds"],
                flops["gflop"] * 1e9,
                limit,
                int8=precision == "int8",
                bf16=precision == "bf16",
            ),
        }
    exact = throughput["predictor_fp32"]["positive_probability"]
    changed = lambda scores: int(np.sum((np.asarray(scores) > 0.5) != (np.asarray(exact) > 0.5)))  # noqa: E731
    points = lambda name: round(100 * (systems[name]["accuracy"] - systems["predictor_fp32"]["accuracy"]), 2)  # noqa: E731
    pipeline_rate = systems["pipeline"]["reviews_per_s"]
    return {
        "reviews": len(texts),
        "latency_reviews": min(config.latency_reviews, len(texts)),
        "predictor_precision": default_precision,
        "predictor_precision_reason": reason,
        "predictor_batch_size": config.batch_size,
        "pipeline_batch_size": config.pipeline_batch_size,
        "systems": systems,
        "throughput_ratio": ratio(systems["predictor"]["reviews_per_s"], pipeline_rate),
        "throughput_ratio_fp32": ratio(systems["predictor_fp32"]["reviews_per_s"], pipeline_rate),
        "throughput_ratio_int8": ratio(systems["predictor_int8"]["reviews_per_s"], pipeline_rate),
        "latency_p50_ratio": ratio(systems["predictor"]["latency"]["p50_ms"], systems["pipeline"]["latency"]["p50_ms"]),
        "latency_p95_ratio": ratio(systems["predictor"]["latency"]["p95_ms"], systems["pipeline"]["latency"]["p95_ms"]),
        "accuracy_change_points": points("predictor"),
        "labels_changed_vs_fp32": changed(throughput["predictor"]["positive_probability"]),
        "int8_accuracy_change_points": points("predictor_int8"),
        "int8_labels_changed_vs_fp32": changed(throughput["predictor_int8"]["positive_probability"]),
        "int8_verdict": int8_verdict(
            points("predictor_int8"),
            changed(throughput["predictor_int8"]["positive_probability"]),
            scheme.summary() if scheme else "not measured",
        ),
        "method": f"throughput over {len(texts)} reviews in {config.rounds} interleaved rounds; latency: one review per call, "
        "each review sent to every system in turn; accuracy against the IMDb labels",
        "machine_limit": limit,
        "flops": flops,
    }


def int8_verdict(change_points: float, labels_changed: int, gate: str) -> str:
    """int8 here, beside the verdict of its gate on the validation reviews (the one 'auto' reads)."""
    here = "within" if abs(change_points) <= MAX_ACCURACY_DROP_POINTS else "outside"
    return (
        f"here {change_points:+.2f} points against fp32 ({labels_changed} labels changed), {here} the "
        f"{MAX_ACCURACY_DROP_POINTS} points allowed; on validation: {gate}"
    )
