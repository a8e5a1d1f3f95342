"""The machine a benchmark ran on and its compute limit: what the CPU is, how fast it multiplies matrices at
the model's shapes, and what fraction of that rate each system reaches on the FLOPs its reviews need."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.bench_config import BenchConfig
from training.device import ONEDNN_ISA_CAP, bf16_is_fast, cpu_features, int8_is_fast

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
        # What the precision choice saw (training.device): the cap a run sets, and bf16/int8 hardware under it.
        "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_CAP),
        "matrix_instructions_usable": sorted(cpu_features()),
        "bf16_is_fast": bf16_is_fast(),
        "int8_is_fast": int8_is_fast(),
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
                from inference.torch_backend import quantize_int8

                linear = torch.nn.Sequential(torch.nn.Linear(hidden, intermediate, bias=False))
                quantized = quantize_int8(linear, keep_fp32=())
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
        "fraction_of_limit": significant(rate / limit["fp32_gemm_gflop_per_s"]),
    }
    if int8 and limit.get("int8_dynamic_gop_per_s"):
        use["fraction_of_int8_limit"] = significant(rate / limit["int8_dynamic_gop_per_s"])
    if bf16 and limit.get("bf16_gemm_gflop_per_s"):
        use["fraction_of_bf16_limit"] = significant(rate / limit["bf16_gemm_gflop_per_s"])
    return use


def significant(fraction: float) -> float:
    """Three significant figures: a tiny model's fraction of the machine's limit stays above zero."""
    return float(f"{fraction:.3g}")


def flop_count(predictor, texts: list[str]) -> dict:
    """FLOPs of scoring `texts` as the Predictor encodes them (head+tail to max_length; the pipeline's head
    truncation keeps the same number of tokens)."""
    from training.text import encode_texts

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
