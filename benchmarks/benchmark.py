"""How much faster this project is than the plain Hugging Face path, both measured in the same run.

    python benchmarks/benchmark.py                       # every CPU part: the shipped adapter, 1,000 IMDb test reviews
    python benchmarks/benchmark.py --inference --cli     # chosen parts only
    python benchmarks/benchmark.py --gpu-train --gpu-inference   # on a machine with a CUDA GPU
    python benchmarks/benchmark.py --smoke               # a tiny model and 20 reviews, every part on the CPU (CI)

Parts (none named: all of them; GPU parts are recorded as skipped on a machine without a GPU):
  --inference      in one process on the CPU: the Predictor at its default precision (bf16 on a CPU with AMX,
                   else fp32), exact fp32 and int8 against transformers.pipeline on the same model and the
                   same reviews: throughput, single-review latency p50/p95, accuracy, labels changed, ratios
  --cli            whole processes, imports and model loading included: `inference/predict.py --file` against
                   benchmarks/pipeline_baseline.py on the same CSV
  --app            `streamlit run app.py` until the first prediction shows in headless Chromium; then the
                   per-request latency of the app script through streamlit's AppTest
  --cpu-train      train.py samples/s on the CPU with the packaged MiniLM at max length 256 and 512: the
                   project's settings (cheap dropout, bf16 where the CPU has AMX; on such a CPU also in fp32)
                   against the same run with PyTorch's dropout in fp32 (the settings before issue 12), and each
                   as a fraction of the limit
  --gpu-train      train.py samples/s with a randomly initialised DistilBERT-base-shaped model at max length 512:
                   bf16, SDPA attention, dynamic padding, length-grouped batches against the tutorial setup
                   (fp32, eager attention, every batch padded to 512, random batches)
  --gpu-inference  Predictor reviews/s on the GPU (bf16) at max length 512 against the pipeline
  --onnx           the adapter exported by inference/export.py, served by onnxruntime (OnnxPredictor), against
                   the PyTorch fp32 Predictor on the same reviews and batches: throughput, latency, logit parity
                   (skipped when requirements-export.txt is not installed)

Every CPU system is also reported as a fraction of the machine's limit: the matrix-multiply rate (fp32, and
bf16 where the CPU has it in hardware) measured in the same run at the model's shapes (tokens x hidden @
hidden x intermediate), against the FLOPs the reviews need (counted from the model's shape and their real
token counts, padding excluded).

Prints a table and writes JSON (machine, date, exact command, load average, every figure) to
results/benchmarks/. Nothing here asserts a speed: targets are reported as met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference.app_server import running_app
from training.model import bf16_is_fast
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT
from training.paths import RESULTS_DIR as PROJECT_RESULTS_DIR
from training.tiny_model import DISTILBERT_BASE_SHAPE, TINY_DISTILBERT_SHAPE, random_distilbert

DEFAULT_DATA_DIR = Path(os.environ.get("IMDB_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "imdb"))
RESULTS_DIR = PROJECT_RESULTS_DIR / "benchmarks"
PARTS = ("inference", "cli", "app", "cpu-train", "gpu-train", "gpu-inference", "onnx")
# Debian and Ubuntu name the browser chromium (or chromium-browser); Google's build is google-chrome.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# Instruction sets that decide the CPU's matrix-multiply limit (fp32 FMA width, int8 dot products, bf16, AMX tiles).
CPU_FLAGS_CHECKED = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
GEMM_TOKENS = 4096  # rows of the measured matrix product: a batch of 16 reviews of 256 tokens
APP_REVIEW = "A wonderful, moving film. The acting is superb and I loved every minute of it."

ACCURACY_TOLERANCE_POINTS = 0.3  # how much accuracy a faster path may cost against exact fp32
# The issues' targets: (part, figure, comparison, bound).
TARGETS = (
    ("inference", "throughput_ratio", ">=", 2.0),
    ("inference", "throughput_ratio", ">=", 2.5),
    ("inference", "latency_p50_ratio", "<=", 0.4),
    ("inference", "accuracy_change_points", "abs<=", ACCURACY_TOLERANCE_POINTS),
    ("cpu-train", "samples_per_s_ratio_256", ">=", 2.0),
    ("cpu-train", "samples_per_s_ratio_512", ">=", 2.0),
    ("gpu-train", "samples_per_s_ratio", ">=", 2.0),
    ("gpu-inference", "reviews_per_s", ">=", 5000.0),
)


@dataclasses.dataclass
class BenchConfig:
    """What to measure and on how much; --smoke shrinks every size so the whole run takes seconds."""

    parts: tuple[str, ...] = PARTS
    model: str | None = None  # adapter folder; None: the shipped one (a tiny one trained here under --smoke)
    data: str = str(DEFAULT_DATA_DIR)
    reviews: int = 1000
    latency_reviews: int = 100
    rounds: int = 5
    seed: int = 0
    batch_size: int = 32
    pipeline_batch_size: int = 1
    app_requests: int = 20
    gpu_reviews: int = 10_000
    gpu_batch_size: int = 256
    gpu_pipeline_batch_size: int = 64
    cpu_train_steps: int = 8
    cpu_train_lengths: tuple[int, ...] = (256, 512)
    train_steps: int = 200
    train_batch_size: int = 32
    train_max_length: int = 512
    threads: int | None = None  # None: PyTorch's default (one per core)
    smoke: bool = False
    output: str | None = None

    def shrunk_for_smoke(self) -> BenchConfig:
        return dataclasses.replace(
            self,
            reviews=20,
            latency_reviews=5,
            rounds=2,
            app_requests=3,
            gpu_reviews=20,
            gpu_batch_size=8,
            gpu_pipeline_batch_size=4,
            cpu_train_steps=2,
            cpu_train_lengths=(64,),
            train_steps=2,
            train_batch_size=4,
            train_max_length=64,
        )


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    for part in PARTS:
        add(f"--{part}", action="store_true", help=f"Run the {part} part (none named: every part).")
    add(
        "--model",
        default=None,
        help="Adapter folder (default: the shipped trained_model/; under --smoke a tiny one trained here).",
    )
    add("--data", default=defaults.data, help="IMDb folder with train.parquet and test.parquet (default: %(default)s).")
    add(
        "--reviews",
        type=int,
        default=defaults.reviews,
        help="Test reviews for throughput and accuracy (default: %(default)s).",
    )
    add(
        "--latency-reviews",
        type=int,
        default=defaults.latency_reviews,
        help="Single reviews timed one by one (default: %(default)s).",
    )
    add(
        "--rounds",
        type=int,
        default=defaults.rounds,
        help="Throughput is measured in this many interleaved chunks, so drifting background load hits every system alike.",
    )
    add(
        "--seed",
        type=int,
        default=defaults.seed,
        help="Seed of the review sample (default: %(default)s, as in the README).",
    )
    add(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="Predictor batch size on the CPU (the CLI's default).",
    )
    add(
        "--pipeline-batch-size",
        type=int,
        default=defaults.pipeline_batch_size,
        help="Pipeline batch size on the CPU (default: %(default)s, the pipeline's own default).",
    )
    add(
        "--app-requests",
        type=int,
        default=defaults.app_requests,
        help="Reviews sent to the app for per-request latency.",
    )
    add("--gpu-reviews", type=int, default=defaults.gpu_reviews, help="Test reviews for GPU inference throughput.")
    add("--gpu-batch-size", type=int, default=defaults.gpu_batch_size, help="Predictor batch size on the GPU.")
    add(
        "--gpu-pipeline-batch-size",
        type=int,
        default=defaults.gpu_pipeline_batch_size,
        help="Pipeline batch size on the GPU.",
    )
    add(
        "--cpu-train-steps",
        type=int,
        default=defaults.cpu_train_steps,
        help="Optimizer steps per CPU training setup and length (batch --train-batch-size).",
    )
    add(
        "--cpu-train-lengths",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=defaults.cpu_train_lengths,
        help="Comma-separated max lengths the CPU training part measures (default: 256,512).",
    )
    add("--train-steps", type=int, default=defaults.train_steps, help="Optimizer steps per GPU training setup.")
    add("--train-batch-size", type=int, default=defaults.train_batch_size, help="Training batch size for both setups.")
    add(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every system, in process and in the CLI subprocesses (default: PyTorch's, one per core). "
        "On a machine other jobs load, 1 avoids threads waiting on descheduled siblings, which distorts small calls most.",
    )
    add(
        "--smoke",
        action="store_true",
        help="Tiny model, 20 reviews, every part on the CPU: checks that it all runs, in well under a minute.",
    )
    add("--output", default=None, help="JSON file to write (default: results/benchmarks/benchmark-<date>.json).")
    args = vars(parser.parse_args(argv))
    chosen = tuple(part for part in PARTS if args.pop(part.replace("-", "_")))
    config = BenchConfig(parts=chosen or PARTS, **args)
    return config.shrunk_for_smoke() if config.smoke else config


# ----------------------------------------------------------------------------- pure helpers


def latency_summary(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
        "mean_ms": round(float(values.mean()), 1),
        "count": len(values),
    }


def accuracy(labels, positive_probability) -> float:
    return float(np.mean((np.asarray(positive_probability) > 0.5) == (np.asarray(labels) == 1)))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def target_met(value: float | None, comparison: str, bound: float) -> bool | None:
    if value is None:
        return None
    if comparison == ">=":
        return value >= bound
    if comparison == "<=":
        return value <= bound
    return abs(value) <= bound


def interleaved(systems: dict[str, Callable[[list[str]], list[float]]], texts: list[str], rounds: int) -> dict:
    """Each system scores every text, in `rounds` chunks taken in turn (order rotating), so a change in
    background load during the run falls on every system alike. Returns seconds and P(positive) per system."""
    seconds = {name: 0.0 for name in systems}
    scores = {name: [] for name in systems}
    names = list(systems)
    for index, chunk in enumerate(np.array_split(np.arange(len(texts)), rounds)):
        part = [texts[i] for i in chunk]
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            scores[name].extend(systems[name](part))
            seconds[name] += time.perf_counter() - started
    return {name: {"seconds": seconds[name], "positive_probability": scores[name]} for name in systems}


def single_latencies(systems: dict[str, Callable[[str], object]], texts: list[str]) -> dict[str, list[float]]:
    """Seconds per single-review call; each review goes to every system in turn (order rotating)."""
    timings = {name: [] for name in systems}
    names = list(systems)
    for index, text in enumerate(texts):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            systems[name](text)
            timings[name].append(time.perf_counter() - started)
    return timings


def pipeline_positive_probability(results: list[dict]) -> list[float]:
    return [result["score"] if result["label"] == "POSITIVE" else 1 - result["score"] for result in results]


# ----------------------------------------------------------------------------- machine and data


def describe_machine() -> dict:
    import peft
    import torch
    import transformers

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda name: next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith(name)), ""
    )  # noqa: E731
    flags = set(field("flags").split())
    machine = {
        "cpu": field("model name") or platform.processor() or "unknown",
        "cpu_cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": sorted(flags & set(CPU_FLAGS_CHECKED)),
        "cpu_flags_checked": list(CPU_FLAGS_CHECKED),  # so a flag's absence is a finding, not an omission
        "torch_threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kilobytes = int(meminfo.read_text().split()[1])
        machine["memory_gib"] = round(kilobytes / 2**20, 1)
    return machine


def sample_reviews(data_dir: str | Path, count: int, seed: int):
    """A fixed sample of the IMDb test split: the same reviews for every system (as the README's command draws them)."""
    import pandas as pd

    frame = pd.read_parquet(Path(data_dir) / "test.parquet", columns=["text", "label"])
    return frame.sample(min(count, len(frame)), random_state=seed).reset_index(drop=True)


def tiny_adapter(workdir: Path, data: str) -> Path:
    """A LoRA adapter on a tiny random DistilBERT, trained by train.py in seconds (for --smoke)."""
    from training import train

    base = random_distilbert(workdir / "tiny_distilbert", TINY_DISTILBERT_SHAPE)
    config = train.TrainConfig(
        base_model=str(base),
        data=data,
        output_dir=str(workdir / "tiny_adapter"),
        results_dir=str(workdir / "tiny_results"),
        max_length=128,
        max_steps=4,
        batch_size=8,
        eval_batch_size=32,
        train_limit=64,
        validation_limit=32,
        lora_rank=4,
        lora_alpha=8,
        logging_steps=2,
        eval_steps=4,
    )
    with quiet():
        train.main(config)
    return Path(config.output_dir)


@contextlib.contextmanager
def quiet():
    """Keep training's progress bars and logs out of the benchmark's table."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


# ----------------------------------------------------------------------------- the machine's limit


def encoder_shape(model_config) -> dict:
    """Hidden size, feed-forward size, layers and heads from a BERT- or DistilBERT-style config."""

    def field(*names):
        return next(getattr(model_config, name) for name in names if getattr(model_config, name, None) is not None)

    return {
        "hidden": int(field("hidden_size", "dim")),
        "intermediate": int(field("intermediate_size", "hidden_dim")),
        "layers": int(field("num_hidden_layers", "n_layers")),
        "heads": int(field("num_attention_heads", "n_heads")),
    }


def forward_flops(shape: dict, token_counts) -> float:
    """FLOPs of one encoder forward pass over sequences of these lengths (no padding).

    Per layer and token, the linear layers cost 2 x their weights: 4 hidden^2 (query, key, value, output)
    plus 2 hidden x intermediate (feed-forward). Attention costs 4 x seq^2 x hidden per layer and sequence
    (scores Q K^T and their product with V). Embeddings, softmax, norms and the head are left out: small.
    """
    hidden, intermediate, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    counts = np.asarray(token_counts, dtype=np.float64)
    linear = 2 * layers * (4 * hidden * hidden + 2 * hidden * intermediate) * counts.sum()
    attention = 4 * layers * hidden * float((counts**2).sum())
    return float(linear + attention)


def _timed_rate(step: Callable[[], object], operations: float, seconds: float) -> dict:
    """Calls `step` in blocks for about `seconds`; the best block's rate is the limit, the median how steady it was."""
    step(), step()  # warm-up: first calls allocate and pick kernels
    rates, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        started = time.perf_counter()
        for _ in range(3):
            step()
        rates.append(3 * operations / (time.perf_counter() - started) / 1e9)
    return {"best": round(max(rates), 1), "median": round(float(np.median(rates)), 1), "blocks": len(rates)}


_LIMITS: dict = {}


def machine_limit(shape: dict, seconds: float) -> dict:
    """The CPU's matrix-multiply rate at the model's shape, (GEMM_TOKENS x hidden) @ (hidden x intermediate),
    with this process's threads: fp32 (torch.matmul) and dynamic int8 (a quantized Linear, activations quantized
    on the fly as the int8 Predictor does). Measured once per shape and thread count in a run."""
    import torch

    key = (shape["hidden"], shape["intermediate"], torch.get_num_threads())
    if key not in _LIMITS:
        hidden, intermediate = shape["hidden"], shape["intermediate"]
        operations = 2.0 * GEMM_TOKENS * hidden * intermediate
        generator = torch.Generator().manual_seed(0)
        activations = torch.randn(GEMM_TOKENS, hidden, generator=generator)
        weights = torch.randn(hidden, intermediate, generator=generator)
        with torch.inference_mode():
            fp32 = _timed_rate(lambda: torch.matmul(activations, weights), operations, seconds)
            bf16 = None
            if bf16_is_fast():
                activations16, weights16 = activations.bfloat16(), weights.bfloat16()
                bf16 = _timed_rate(lambda: torch.matmul(activations16, weights16), operations, seconds / 2)
            int8 = None
            with contextlib.suppress(Exception):  # no quantized engine on this build: fp32 only
                from inference.predictor import quantize_int8

                linear = torch.nn.Sequential(torch.nn.Linear(hidden, intermediate, bias=False))
                quantized = quantize_int8(linear, keep_exact=())
                int8 = _timed_rate(lambda: quantized(activations), operations, seconds / 2)
        _LIMITS[key] = {
            "fp32_gemm_gflop_per_s": fp32["best"],
            "fp32_gemm_median_gflop_per_s": fp32["median"],
            "int8_dynamic_gop_per_s": int8["best"] if int8 else None,
            "bf16_gemm_gflop_per_s": bf16["best"] if bf16 else None,  # None: no bf16 hardware (AMX) to use
            "shape": f"({GEMM_TOKENS} x {hidden}) @ ({hidden} x {intermediate})",
            "threads": key[2],
            "seconds": seconds,
            "method": "best of repeated blocks of 3 products (median alongside); int8: torch dynamic quantized Linear, "
            "per-channel weights, activation quantization included",
        }
    return _LIMITS[key]


def compute_use(seconds: float, flops: float, limit: dict, int8: bool = False, bf16: bool = False) -> dict:
    """A system's achieved rate and its fraction of the fp32 limit (and of the int8 or bf16 one for a system
    computing in that precision)."""
    rate = flops / seconds / 1e9
    use = {
        "gflop_per_s": round(rate, 1),
        "fraction_of_limit": round(rate / limit["fp32_gemm_gflop_per_s"], 3),
    }
    if int8 and limit.get("int8_dynamic_gop_per_s"):
        use["fraction_of_int8_limit"] = round(rate / limit["int8_dynamic_gop_per_s"], 3)
    if bf16 and limit.get("bf16_gemm_gflop_per_s"):
        use["fraction_of_bf16_limit"] = round(rate / limit["bf16_gemm_gflop_per_s"], 3)
    return use


def flop_count(predictor, texts: list[str]) -> dict:
    """FLOPs of scoring `texts` as the Predictor encodes them (head+tail to max_length; the pipeline's head
    truncation keeps the same number of tokens)."""
    from training.data import encode_texts

    counts = [
        len(ids)
        for ids in encode_texts(predictor.tokenizer, texts, predictor.config.max_length, predictor.config.truncation)
    ]
    shape = encoder_shape(predictor.model.config)
    flops = forward_flops(shape, counts)
    return {
        "model_shape": shape,
        "tokens": int(sum(counts)),
        "mean_tokens_per_review": round(float(np.mean(counts)), 1),
        "gflop": round(flops / 1e9, 2),
        "mflop_per_token": round(flops / sum(counts) / 1e6, 2),
        "method": "linear layers 2 x weights x tokens, attention 4 x seq^2 x hidden per layer, real token counts "
        "(padding is not useful work, so it lowers the fraction)",
    }


def limit_seconds(config: BenchConfig) -> float:
    return 0.3 if config.smoke else 3.0


# ----------------------------------------------------------------------------- parts


def bench_inference(config: BenchConfig, model_dir: Path) -> dict:
    """In-process CPU inference: the Predictor at its default precision (bf16 on a CPU with AMX, else fp32), exact
    fp32 and opt-in int8, against the pipeline on the same reviews."""
    import torch

    from benchmarks.pipeline_baseline import load_pipeline
    from inference.predictor import Predictor, resolve_precision
    from training.model import quiet_loading

    reviews = sample_reviews(config.data, config.reviews, config.seed)
    texts, labels = reviews["text"].tolist(), reviews["label"].to_numpy()
    default_precision = resolve_precision("auto", torch.device("cpu"))  # what users get by default
    loaders = {
        "predictor": lambda: Predictor.from_pretrained(model_dir, device="cpu", precision=default_precision),
        "predictor_fp32": lambda: Predictor.from_pretrained(model_dir, device="cpu", precision="fp32"),
        "predictor_int8": lambda: Predictor.from_pretrained(model_dir, device="cpu", precision="int8"),
        "pipeline": lambda: load_pipeline(model_dir, device="cpu", batch_size=config.pipeline_batch_size),
    }
    if default_precision == "fp32":  # no bf16 hardware: the default is the exact path, loaded and measured once
        del loaders["predictor_fp32"]
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
    if "predictor_fp32" not in batch:
        throughput["predictor_fp32"], latencies["predictor_fp32"] = throughput["predictor"], latencies["predictor"]
        load_s["predictor_fp32"] = load_s["predictor"]

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
            points("predictor_int8"), changed(throughput["predictor_int8"]["positive_probability"])
        ),
        "method": f"throughput over {len(texts)} reviews in {config.rounds} interleaved rounds; latency: one review per call, "
        "each review sent to every system in turn; accuracy against the IMDb labels",
        "machine_limit": limit,
        "flops": flops,
    }


def int8_verdict(change_points: float, labels_changed: int) -> str:
    """Why int8 is (not) the CPU default, from this run's figures: the rule is 0.3 points of accuracy."""
    if abs(change_points) <= ACCURACY_TOLERANCE_POINTS:
        return (
            f"within {ACCURACY_TOLERANCE_POINTS} points of fp32 here ({change_points:+.2f}, {labels_changed} labels "
            "changed), but other samples and machines measured more: opt-in only (docs/speed.md)"
        )
    return (
        f"not a default: {change_points:+.2f} points of accuracy against fp32 ({labels_changed} labels changed), more "
        f"than the {ACCURACY_TOLERANCE_POINTS} points a speed-up may cost; opt-in with --precision int8"
    )


def bench_onnx(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """The ONNX export served by onnxruntime against the PyTorch fp32 Predictor: same reviews, same batches."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed: pip install -r requirements-export.txt"}
    import onnxruntime
    import torch

    from inference import export
    from inference.onnx_predictor import OnnxPredictor
    from inference.predictor import Predictor
    from training.model import quiet_loading

    folder = workdir / "onnx_export"
    started = time.perf_counter()
    with quiet():
        export.main(export.ExportConfig(model=model_dir, output=folder, overwrite=True))
    export_s = round(time.perf_counter() - started, 1)
    with quiet_loading():
        exact = Predictor.from_pretrained(model_dir, device="cpu", precision="fp32")
    served = OnnxPredictor.from_pretrained(folder, threads=config.threads)
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
        "opset": served.record.onnx["opset"],
        "machine_limit": limit,
        "flops": flops,
        "method": f"the same {len(texts)} reviews and batches of {config.batch_size} for both, length-sorted, in "
        f"{config.rounds} interleaved rounds (tokenization included); latency: one review per call",
    }


def bench_cli(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """Whole processes as a user runs them, model loading included, on the same CSV of reviews."""
    import pandas as pd

    reviews = sample_reviews(config.data, config.reviews, config.seed)
    source = workdir / f"reviews_{len(reviews)}.csv"
    reviews.to_csv(source, index=False)
    commands = {
        "predict_cli": [
            sys.executable,
            "inference/predict.py",
            "--file",
            str(source),
            "--output",
            str(workdir / "predict_cli.csv"),
            "--model",
            str(model_dir),
            "--device",
            "cpu",
        ],
        "pipeline_script": [
            sys.executable,
            "benchmarks/pipeline_baseline.py",
            "--file",
            str(source),
            "--output",
            str(workdir / "pipeline_script.csv"),
            "--model",
            str(model_dir),
            "--batch-size",
            str(config.pipeline_batch_size),
            "--device",
            "cpu",
        ],
    }
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **thread_environment(config.threads)}
    result = {"reviews": len(reviews), "commands": {name: shlex.join(command) for name, command in commands.items()}}
    for name in ("pipeline_script", "predict_cli"):
        started = time.perf_counter()
        done = subprocess.run(commands[name], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(commands[name])} exited {done.returncode}: {done.stderr[-2000:]}")
        output = pd.read_csv(workdir / f"{name}.csv", keep_default_na=False)
        result[name] = {
            "wall_s": round(wall_s, 2),
            "reviews_per_s": round(len(reviews) / wall_s, 2),
            "accuracy": round(float(np.mean((output["predicted_label"] == "POSITIVE") == (output["label"] == 1))), 4),
        }
    result["wall_time_ratio"] = ratio(result["predict_cli"]["wall_s"], result["pipeline_script"]["wall_s"])
    result["speedup"] = ratio(result["pipeline_script"]["wall_s"], result["predict_cli"]["wall_s"])
    return result


def bench_app(config: BenchConfig, model_dir: Path, inference_result: dict | None) -> dict:
    """Start-up to the first prediction in a real browser, then per-request latency of the app script."""
    result = {"start_to_first_prediction": browser_first_prediction(model_dir, config.threads)}
    result["per_request"] = app_request_latency(config, model_dir)
    if inference_result and "systems" in inference_result:
        result["per_request_p50_ratio_to_pipeline"] = ratio(
            result["per_request"]["latency"]["p50_ms"], inference_result["systems"]["pipeline"]["latency"]["p50_ms"]
        )
    return result


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH (the one scripts/install_test_tools.sh checked), or None."""
    return next((found for name in BROWSER_NAMES if (found := shutil.which(name))), None)


def browser_first_prediction(model_dir: Path, threads: int | None) -> dict:
    """`streamlit run app.py` as a user starts it; headless Chromium types a review and waits for the verdict."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (scripts/install_test_tools.sh)"}
    chromium = find_browser()
    if chromium is None:
        return {"skipped": f"no browser found ({', '.join(BROWSER_NAMES)})"}
    environment = {"SENTIMENT_MODEL_DIR": str(model_dir), **thread_environment(threads)}
    with running_app(env=environment) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(server.url, timeout=60_000)
        review_box = page.get_by_role("textbox", name="Movie review")
        review_box.wait_for(timeout=120_000)  # shown once the model has loaded
        box_s = server.elapsed_s()
        review_box.fill(APP_REVIEW)
        review_box.press("Control+Enter")  # applies a text area in Streamlit
        shown = page.get_by_text("Predicted in")  # the result's last line
        shown.wait_for(timeout=120_000)
        first_prediction_s = server.elapsed_s()
        caption = shown.inner_text()
        browser.close()
    return {
        "seconds": round(first_prediction_s, 2),
        "review_box_shown_s": round(box_s, 2),
        "app_caption": caption,
        "method": "wall time from starting `streamlit run app.py` to the verdict on screen in headless Chromium",
    }


def thread_environment(threads: int | None) -> dict:
    """Environment that gives a subprocess's PyTorch `threads` CPU threads ({} for its default)."""
    return {} if threads is None else {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def app_request_latency(config: BenchConfig, model_dir: Path) -> dict:
    """Each request: a review typed into the app and the whole script rerun (prediction and rendering)."""
    from streamlit.testing.v1 import AppTest

    import app
    from inference.app_logic import MODEL_DIR_ENV

    reviews = sample_reviews(config.data, config.app_requests, config.seed + 1)["text"].tolist()
    previous = os.environ.get(MODEL_DIR_ENV)
    os.environ[MODEL_DIR_ENV] = str(model_dir)
    try:
        started = time.perf_counter()
        test = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=300).run()
        first_run_s = time.perf_counter() - started
        timings = []
        for review in [APP_REVIEW, *reviews]:
            started = time.perf_counter()
            test.text_area(key=app.REVIEW_KEY).input(review).run()
            timings.append(time.perf_counter() - started)
            if test.exception:
                raise RuntimeError(f"the app raised: {test.exception[0].value}")
    finally:
        if previous is None:
            os.environ.pop(MODEL_DIR_ENV, None)
        else:
            os.environ[MODEL_DIR_ENV] = previous
    return {
        "latency": latency_summary(timings[1:]),
        "first_run_s": round(first_run_s, 2),
        "method": "streamlit.testing AppTest: the review set in the text area and the script rerun, in process "
        "(no browser or network); the first request is a warm-up, not counted",
    }


def training_config(config: BenchConfig, base: str, run: Path, steps: int, max_length: int, settings: dict):
    """train.py's settings for `steps` steps of --train-batch-size reviews, written under `run`."""
    from training import train

    return train.TrainConfig(
        base_model=base,
        data=config.data,
        output_dir=str(run / "adapter"),
        results_dir=str(run / "results"),
        max_length=max_length,
        max_steps=steps,
        batch_size=config.train_batch_size,
        eval_batch_size=2 * config.train_batch_size,
        train_limit=max(steps * config.train_batch_size, 4),
        validation_limit=max(8, config.train_batch_size * 4),
        logging_steps=max(1, steps // 4),
        report_to="none",
        seed=0,
        **settings,
    )


def timed_training(train_config) -> dict:
    """train.main's summary (samples/s, precision, ...), its progress kept out of the table."""
    from training import train

    with quiet():
        return train.main(train_config)


def training_token_counts(train_config) -> list[int]:
    """Token counts of the training reviews a run with these settings sees (train.py's own split and encoding)."""
    from training import data, train
    from training.model import load_tokenizer

    texts = train.load_data(train_config).train["text"].tolist()
    ids = data.encode_texts(
        load_tokenizer(train_config.base_model), texts, train_config.max_length, train_config.truncation
    )
    return [len(sequence) for sequence in ids]


def bench_cpu_train(config: BenchConfig, workdir: Path) -> dict:
    """train.py on the CPU with the real pretrained MiniLM: the project's settings against the same run with
    PyTorch's dropout in fp32 (train.py as it was before these optimisations), at each max length."""
    import torch

    from training.model import load_base_config

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


def bench_gpu_train(config: BenchConfig, workdir: Path) -> dict:
    """train.py with the project's settings against the tutorial setup, same model, data and steps."""
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not config.smoke:
        return {
            "skipped": "no CUDA GPU on this machine: run `python benchmarks/benchmark.py --gpu-train` on one "
            "(--smoke checks the code path on the CPU at a tiny size)"
        }
    shape = DISTILBERT_BASE_SHAPE if on_gpu and not config.smoke else TINY_DISTILBERT_SHAPE
    base = random_distilbert(workdir / "distilbert", shape)
    setups = {
        "project": dict(precision="auto", attention="sdpa", padding="dynamic", group_by_length=True),
        "tutorial": dict(precision="fp32", attention="eager", padding="max_length", group_by_length=False),
    }
    result = {
        "device": torch.cuda.get_device_name() if on_gpu else "CPU (smoke size: checks the code path, not the speed)",
        "model": {"shape": shape, "weights": "random (distilbert-base-uncased's shape)"},
        "steps": config.train_steps,
        "batch_size": config.train_batch_size,
        "max_length": config.train_max_length,
        "setups": setups,
    }
    # A few unmeasured steps of each setup first: the CUDA context, cuBLAS and kernel plans are built once per
    # process, and would otherwise all be charged to whichever setup runs first.
    for name, settings in [(f"warmup_{name}", settings) for name, settings in setups.items()] + list(setups.items()):
        warmup = name.startswith("warmup_")
        steps = min(10, config.train_steps) if warmup else config.train_steps
        summary = timed_training(
            training_config(config, str(base), workdir / f"train_{name}", steps, config.train_max_length, settings)
        )
        if not warmup:
            result[name] = {"samples_per_s": summary["train_samples_per_second"], "run_s": summary["train_runtime_s"]}
        if on_gpu:
            torch.cuda.empty_cache()
    result["samples_per_s_ratio"] = ratio(result["project"]["samples_per_s"], result["tutorial"]["samples_per_s"])
    result["method"] = (
        "the Trainer's train_samples_per_second (steps x batch / training loop time, which includes one "
        "short validation pass and checkpoint at the end); LoRA as train.py sets it up"
    )
    return result


def bench_gpu_inference(config: BenchConfig, model_dir: Path) -> dict:
    """Predictor on the GPU (bf16, length-sorted batches) against the pipeline on the GPU, same reviews."""
    import torch

    from benchmarks.pipeline_baseline import load_pipeline
    from inference.predict import Predictor
    from training.model import quiet_loading

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not config.smoke:
        return {"skipped": "no CUDA GPU on this machine: run `python benchmarks/benchmark.py --gpu-inference` on one"}
    device = "cuda" if on_gpu else "cpu"
    reviews = sample_reviews(config.data, config.gpu_reviews, config.seed)
    texts, labels = reviews["text"].tolist(), reviews["label"].to_numpy()
    with quiet_loading():
        predictor = Predictor.from_pretrained(model_dir, device=device)
        classify = load_pipeline(model_dir, device=device, batch_size=config.gpu_pipeline_batch_size)
    systems = {
        "predictor": lambda part: predictor.predict_proba(part, batch_size=config.gpu_batch_size)[:, 1].tolist(),
        "pipeline": lambda part: pipeline_positive_probability(classify(part)),
    }
    result = {
        "device": torch.cuda.get_device_name() if on_gpu else "CPU (smoke size: checks the code path, not the speed)",
        "reviews": len(texts),
        "max_length": predictor.config.max_length,
        "precision": predictor.precision,
        "batch_size": config.gpu_batch_size,
        "pipeline_batch_size": config.gpu_pipeline_batch_size,
    }
    for name, score in systems.items():
        # Two passes over the same reviews: the first builds the CUDA context and a kernel plan per batch
        # shape (cold, what the first request pays), the second is the steady state a server runs at.
        passes = []
        for _ in range(2):
            if on_gpu:
                torch.cuda.synchronize()
            started = time.perf_counter()
            scores = score(texts)
            if on_gpu:
                torch.cuda.synchronize()
            passes.append(time.perf_counter() - started)
        result[name] = {
            "reviews_per_s": round(len(texts) / passes[1], 1),
            "cold_reviews_per_s": round(len(texts) / passes[0], 1),
            "accuracy": round(accuracy(labels, scores), 4),
        }
    result["reviews_per_s"] = (
        result["predictor"]["reviews_per_s"] if on_gpu else None
    )  # the 5,000/s target is for a GPU
    result["reviews_per_s_ratio"] = ratio(result["predictor"]["reviews_per_s"], result["pipeline"]["reviews_per_s"])
    result["method"] = "end to end (tokenization included), one call over every review; the second of two passes"
    return result


# ----------------------------------------------------------------------------- report


def check_targets(parts: dict) -> list[dict]:
    checked = []
    for part, figure, comparison, bound in TARGETS:
        if part in parts and isinstance(parts[part], dict) and figure in parts[part]:
            value = parts[part][figure]
            checked.append(
                {
                    "part": part,
                    "figure": figure,
                    "value": value,
                    "target": f"{comparison.replace('abs', '|x| ')} {bound}",
                    "met": target_met(value, comparison, bound),
                }
            )
    return checked


def table(report: dict) -> str:
    """The results as a markdown table: what, this project, the baseline, the ratio."""
    rows = [("part", "measure", "this project", "baseline", "ratio"), ("---",) * 5]
    parts = report["parts"]
    fmt = lambda value, unit="": (
        "–" if value is None else f"{value:,.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"
    )  # noqa: E731
    for part, result in parts.items():
        if "skipped" in result or "error" in result:
            rows.append(
                (
                    part,
                    "skipped" if "skipped" in result else "error",
                    result.get("skipped") or result.get("error"),
                    "",
                    "",
                )
            )
            continue
        if part == "inference":
            s = result["systems"]
            p, e, i, b = s["predictor"], s["predictor_fp32"], s["predictor_int8"], s["pipeline"]
            rows += [
                (
                    part,
                    f"throughput, {result['reviews']} reviews (reviews/s)",
                    f"{fmt(p['reviews_per_s'])} ({result['predictor_precision']}, default); "
                    f"{fmt(e['reviews_per_s'])} (fp32); {fmt(i['reviews_per_s'])} (int8)",
                    f"{fmt(b['reviews_per_s'])} (pipeline, batch {result['pipeline_batch_size']})",
                    f"{fmt(result['throughput_ratio'])}x; fp32 {fmt(result['throughput_ratio_fp32'])}x; "
                    f"int8 {fmt(result['throughput_ratio_int8'])}x",
                ),
                (
                    part,
                    f"single-review latency p50, {result['latency_reviews']} reviews",
                    f"{fmt(p['latency']['p50_ms'], ' ms')}; fp32 {fmt(e['latency']['p50_ms'], ' ms')}",
                    fmt(b["latency"]["p50_ms"], " ms"),
                    fmt(result["latency_p50_ratio"]),
                ),
                (
                    part,
                    "single-review latency p95",
                    f"{fmt(p['latency']['p95_ms'], ' ms')}; fp32 {fmt(e['latency']['p95_ms'], ' ms')}",
                    fmt(b["latency"]["p95_ms"], " ms"),
                    fmt(result["latency_p95_ratio"]),
                ),
                (
                    part,
                    f"fraction of the fp32 limit ({result['machine_limit']['fp32_gemm_gflop_per_s']} GFLOP/s)",
                    f"{fmt(p['fraction_of_limit'])} ({result['predictor_precision']}"
                    + (
                        f"; of the bf16 limit {fmt(p['fraction_of_bf16_limit'])}"
                        if "fraction_of_bf16_limit" in p
                        else ""
                    )
                    + f"); {fmt(e['fraction_of_limit'])} (fp32); {fmt(i['fraction_of_limit'])} (int8)",
                    fmt(b["fraction_of_limit"]),
                    "",
                ),
                (
                    part,
                    "accuracy",
                    f"{p['accuracy']:.4f} ({result['predictor_precision']}: {result['accuracy_change_points']:+.2f} points, "
                    f"{result['labels_changed_vs_fp32']} labels changed); fp32 {e['accuracy']:.4f}; int8 "
                    f"{i['accuracy']:.4f} ({result['int8_accuracy_change_points']:+.2f}, "
                    f"{result['int8_labels_changed_vs_fp32']} changed)",
                    f"{b['accuracy']:.4f}",
                    "",
                ),
                (part, "int8", result["int8_verdict"], "", ""),
            ]
        elif part == "onnx":
            o, e = result["systems"]["onnxruntime"], result["systems"]["predictor_fp32"]
            rows += [
                (
                    part,
                    f"throughput, {result['reviews']} reviews (reviews/s)",
                    f"{fmt(o['reviews_per_s'])} (onnxruntime)",
                    f"{fmt(e['reviews_per_s'])} (PyTorch fp32)",
                    f"{fmt(result['throughput_ratio'])}x",
                ),
                (
                    part,
                    "fraction of the fp32 limit",
                    fmt(o["fraction_of_limit"]),
                    fmt(e["fraction_of_limit"]),
                    "",
                ),
                (
                    part,
                    "max |logit difference|, labels changed",
                    f"{result['max_abs_logit_diff']:.1e}, {result['labels_changed_vs_fp32']}",
                    "",
                    "",
                ),
            ]
        elif part == "cli":
            c, b = result["predict_cli"], result["pipeline_script"]
            rows.append(
                (
                    part,
                    f"whole process, {result['reviews']} reviews (wall s)",
                    f"{c['wall_s']:.1f} s (accuracy {c['accuracy']:.4f})",
                    f"{b['wall_s']:.1f} s (accuracy {b['accuracy']:.4f})",
                    f"{fmt(result['speedup'])}x faster",
                )
            )
        elif part == "app":
            first, per = result["start_to_first_prediction"], result["per_request"]
            rows.append(
                (
                    part,
                    "`streamlit run` to first prediction",
                    fmt(first.get("seconds"), " s") if "seconds" in first else first.get("skipped"),
                    "",
                    "",
                )
            )
            rows.append(
                (
                    part,
                    f"per request p50 / p95 ({per['latency']['count']} requests, AppTest)",
                    f"{per['latency']['p50_ms']:.0f} / {per['latency']['p95_ms']:.0f} ms",
                    "",
                    fmt(result.get("per_request_p50_ratio_to_pipeline")),
                )
            )
        elif part == "cpu-train":
            limit = result["machine_limit"]
            for length, measured in result["lengths"].items():
                p, b = measured["project"], measured["before"]
                rows.append(
                    (
                        part,
                        f"training samples/s at {length} tokens (batch {result['batch_size']})",
                        f"{fmt(p['samples_per_s'])} ({p['precision']})",
                        f"{fmt(b['samples_per_s'])} (fp32, PyTorch dropout)",
                        f"{fmt(measured['samples_per_s_ratio'])}x",
                    )
                )
                if "project_fp32" in measured:
                    rows.append(
                        (
                            part,
                            f"the same in fp32 at {length} tokens (cheap dropout alone: a CPU without AMX)",
                            fmt(measured["project_fp32"]["samples_per_s"]),
                            fmt(b["samples_per_s"]),
                            f"{fmt(measured['samples_per_s_ratio_fp32'])}x",
                        )
                    )
                rows.append(
                    (
                        part,
                        f"fraction of the fp32 limit ({limit['fp32_gemm_gflop_per_s']} GFLOP/s)"
                        + (f"; of bf16 ({limit['bf16_gemm_gflop_per_s']})" if p.get("fraction_of_bf16_limit") else ""),
                        fmt(p["fraction_of_limit"])
                        + (f"; bf16 {fmt(p['fraction_of_bf16_limit'])}" if p.get("fraction_of_bf16_limit") else ""),
                        fmt(b["fraction_of_limit"]),
                        "",
                    )
                )
        elif part == "gpu-train":
            rows.append(
                (
                    part,
                    f"training samples/s ({result['device']})",
                    fmt(result["project"]["samples_per_s"]),
                    fmt(result["tutorial"]["samples_per_s"]),
                    f"{fmt(result['samples_per_s_ratio'])}x",
                )
            )
        elif part == "gpu-inference":
            rows.append(
                (
                    part,
                    f"inference reviews/s ({result['device']})",
                    fmt(result["predictor"]["reviews_per_s"]),
                    fmt(result["pipeline"]["reviews_per_s"]),
                    f"{fmt(result['reviews_per_s_ratio'])}x",
                )
            )
    lines = ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    for target in report["targets"]:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        lines.append(f"target {target['part']} {target['figure']} {target['target']}: {target['value']} -> {verdict}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(config: BenchConfig, argv: list[str] | None = None) -> dict:
    """Run the chosen parts, write the JSON report, return it. A part that fails is recorded, not fatal."""
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    started = datetime.datetime.now().astimezone()
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/benchmark.py", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": config.smoke,
        "machine": describe_machine(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "settings": dataclasses.asdict(config),
        "parts": {},
    }
    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        workdir = Path(scratch)
        model_dir = Path(config.model) if config.model else None
        if model_dir is None:
            model_dir = tiny_adapter(workdir, config.data) if config.smoke else DEFAULT_MODEL_DIR
        report["model"] = str(model_dir)
        runners = {
            "inference": lambda: bench_inference(config, model_dir),
            "cli": lambda: bench_cli(config, model_dir, workdir),
            "app": lambda: bench_app(config, model_dir, report["parts"].get("inference")),
            "cpu-train": lambda: bench_cpu_train(config, workdir),
            "gpu-train": lambda: bench_gpu_train(config, workdir),
            "gpu-inference": lambda: bench_gpu_inference(config, model_dir),
            "onnx": lambda: bench_onnx(config, model_dir, workdir),
        }
        for part in config.parts:
            part_started = time.perf_counter()
            print(f"[{part}] running ...", file=sys.stderr, flush=True)
            try:
                report["parts"][part] = runners[part]()
            except Exception as error:  # recorded in the report; the exit status says something failed
                report["parts"][part] = {
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            report["parts"][part]["part_s"] = round(time.perf_counter() - part_started, 1)
    report["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    report["targets"] = check_targets(report["parts"])
    if config.smoke:  # a tiny random model's figures say the code runs, nothing about speed
        for target in report["targets"]:
            target.update(met=None, note="smoke run on a tiny model: not a measurement")
    output = (
        Path(config.output)
        if config.output
        else RESULTS_DIR / (f"{'smoke' if config.smoke else 'benchmark'}-{started.strftime('%Y%m%d-%H%M%S')}.json")
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    report["output"] = str(output)
    print(
        f"{report['machine']['cpu']}, {report['machine']['cpu_cores_available']} cores, GPU: {report['machine']['gpu'] or 'none'}; "
        f"{report['date']}; load average at start {report['load_average_at_start']}"
    )
    print(table(report))
    print(f"JSON: {output}")
    return report


def cli(argv: list[str] | None = None) -> int:
    report = main(parse_args(argv), argv)
    return 1 if any("error" in result for result in report["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(cli())
