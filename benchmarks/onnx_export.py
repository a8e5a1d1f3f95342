"""The onnx part: the adapter exported by inference/export.py and served by onnxruntime (the Predictor's onnxruntime
backend, fp32) against the PyTorch fp32 Predictor on the same reviews and batches: throughput, latency and logit
parity. Named
onnx_export, not onnx, so that running benchmarks/benchmark.py (this folder first on sys.path) cannot shadow
the onnx package."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.bench_config import BenchConfig
from benchmarks.machine import compute_use, flop_count, limit_seconds, machine_limit
from benchmarks.timing import interleaved, latency_summary, quiet, ratio, sample_reviews, single_latencies


def bench_onnx(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """The ONNX export served by onnxruntime against the PyTorch fp32 Predictor: same reviews, same batches."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed: pip install -r requirements-export.txt"}
    import onnxruntime
    import torch

    from inference import export
    from inference.predictor import Predictor
    from training.base import quiet_loading

    folder = workdir / "onnx_export"
    started = time.perf_counter()
    with quiet():
        export.main(export.ExportConfig(model=model_dir, output=folder, overwrite=True))
    export_s = round(time.perf_counter() - started, 1)
    with quiet_loading():
        exact = Predictor.from_pretrained(model_dir, device="cpu", precision="fp32")
    served = Predictor.from_pretrained(folder, precision="fp32", threads=config.threads)
    reviews = sample_reviews(config.data, config.reviews, config.seed)
    texts, labels = reviews["text"].tolist(), reviews["label"].to_numpy()
    batch = {
        "predictor_fp32": lambda part: exact.predict_logits(part, batch_size=config.batch_size).tolist(),
        "onnxruntime": lambda part: served.predict_logits(part, batch_size=config.batch_size).tolist(),
    }
    one = {"predictor_fp32": exact.predict_one, "onnxruntime": served.predict_one}
    single_latencies(one, texts[:1])  # warm-up
    throughput = interleaved(batch, texts, config.rounds)
    latencies = single_latencies(one, texts[: config.latency_reviews])
    flops = flop_count(exact, texts)
    limit = machine_limit(flops["model_shape"], limit_seconds(config))
    logits = {name: np.asarray(throughput[name]["positive_probability"]) for name in batch}  # rows of logits here
    systems = {}
    for name in batch:
        systems[name] = {
            "reviews_per_s": round(len(texts) / throughput[name]["seconds"], 2),
            "latency": latency_summary(latencies[name]),
            "accuracy": round(float(np.mean(logits[name].argmax(1) == labels)), 4),
            **compute_use(throughput[name]["seconds"], flops["gflop"] * 1e9, limit),
        }
    return {
        "reviews": len(texts),
        "latency_reviews": min(config.latency_reviews, len(texts)),
        "batch_size": config.batch_size,
        "systems": systems,
        "throughput_ratio": ratio(systems["onnxruntime"]["reviews_per_s"], systems["predictor_fp32"]["reviews_per_s"]),
        "latency_p50_ratio": ratio(
            systems["onnxruntime"]["latency"]["p50_ms"], systems["predictor_fp32"]["latency"]["p50_ms"]
        ),
        "max_abs_logit_diff": float(np.abs(logits["onnxruntime"] - logits["predictor_fp32"]).max()),
        "labels_changed_vs_fp32": int(np.sum(logits["onnxruntime"].argmax(1) != logits["predictor_fp32"].argmax(1))),
        "export_s": export_s,
        "onnxruntime": onnxruntime.__version__,
        "onnx_threads": config.threads or "onnxruntime default (one per physical core)",
        "torch_threads": torch.get_num_threads(),
        "graph_optimization": "ORT_ENABLE_ALL",
        "opset": served.config.onnx["opset"],
        "fused_operators": served.config.onnx["fused_operators"],
        "machine_limit": limit,
        "flops": flops,
        "method": f"the same {len(texts)} reviews and batches of {config.batch_size} for both, length-sorted, in "
        f"{config.rounds} interleaved rounds (tokenization included); latency: one review per call",
    }
