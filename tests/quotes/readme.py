"""The README's figures: the shipped adapter's test row and training run, the CPU table, the API, the GPU run."""

from __future__ import annotations

from tests.quotes import (
    API_LOAD,
    CPU_TABLE,
    CPU_TRAIN,
    GPU_BENCHMARK,
    GPU_CHECK,
    SHIPPED_METRICS,
    SHIPPED_TEST,
    shipped_row,
    table_system,
)

QUOTES = [
    ("README.md", CPU_TABLE, table_system("this_cpu", "pytorch bf16")),
    ("README.md", CPU_TABLE, table_system("amx_off", "pytorch fp32")),
    ("README.md", CPU_TABLE, table_system("amx_off", "onnxruntime int8 (gated scheme)")),
    ("README.md", API_LOAD, ("in_process/api_saturated_reviews_per_s", "the API answered {:.2f} reviews/s")),
    ("README.md", API_LOAD, ("in_process/api_over_in_process", "clients, {:.2f}x the in-process")),
    (
        "README.md",
        SHIPPED_TEST,
        lambda r: (
            shipped_row(r["metrics"])
            + " {:.4f} | {:.4f} |".format(r["metrics"]["expected_calibration_error"], r["metrics"]["log_loss"])
        ),
    ),
    ("README.md", SHIPPED_TEST, ("calibration/uncalibrated/expected_calibration_error", "calibration error is {:.4f}")),
    ("README.md", SHIPPED_TEST, ("calibration/uncalibrated/log_loss", "the log loss {:.4f}")),
    ("README.md", SHIPPED_METRICS, ("training/num_train_examples", "trained on {:,} IMDb")),
    ("README.md", SHIPPED_METRICS, ("training/train_runtime_s", "{:.0f} s run on one NVIDIA H200")),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-train/samples_per_s_ratio", "training **{:.2f}x**")),
    (
        "README.md",
        GPU_BENCHMARK,
        lambda r: "({:.1f} against {:.1f}, target 2x)".format(
            r["parts"]["gpu-train"]["project"]["samples_per_s"], r["parts"]["gpu-train"]["tutorial"]["samples_per_s"]
        ),
    ),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-inference/pipeline/reviews_per_s", "the `pipeline` does {:.0f})")),
    ("README.md", GPU_CHECK, ("stages/pytest/counts/passed", "`pytest -m gpu` {} of 5 passed")),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-inference/reviews_per_s", "inference **{:,.0f} reviews/s**")),
    (
        "README.md",
        CPU_TRAIN,
        lambda r: "runs at {:.2f}x / {:.2f}x the samples/s of `train.py` before".format(
            *(r["parts"]["cpu-train"]["lengths"][n]["samples_per_s_ratio"] for n in ("256", "512"))
        ),
    ),
]
