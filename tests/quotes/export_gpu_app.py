"""docs/export.md's, docs/gpu.md's, docs/app.md's and docs/development.md's figures."""

from __future__ import annotations

from tests.quotes import (
    CPU_TABLE,
    EXPORT,
    GPU_BEFORE_FIX,
    GPU_BENCHMARK,
    GPU_CHECK,
    GPU_PROFILE,
    INSTALL_EXPORT,
    INT8_GATE,
    SHIPPED_METRICS,
    cpu_system,
)

QUOTES = [
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: "| 0 | {:.2f} | {:.2f}x |".format(
            cpu_system(r, "amx_off", "onnxruntime fp32")["reviews_per_s"],
            r["parts"]["cpu-table"]["amx_off_export_fp32_ratio_to_pytorch_fp32"],
        ),
    ),
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: "| {:.2f} | 1x | 0 | {:.2f} | 1x |".format(
            cpu_system(r, "this_cpu", "pytorch fp32")["reviews_per_s"],
            cpu_system(r, "amx_off", "pytorch fp32")["reviews_per_s"],
        ),
    ),
    ("docs/export.md", INT8_GATE, ("onnxruntime/validation/labels_changed", "({} of 2,500 validation labels")),
    (
        "docs/export.md",
        EXPORT,
        lambda r: "1 `EmbedLayerNormalization`, {Attention} `Attention`, 12".format(**r["onnx"]["fused_operators"]),
    ),
    ("docs/export.md", EXPORT, ("onnx/fused_operators/BiasGelu", "{} `BiasGelu` for the shipped")),
    ("docs/export.md", EXPORT, ("exported/parity_check/max_abs_logit_diff", "logits within {:.1e} of PyTorch's")),
    ("docs/gpu.md", GPU_BENCHMARK, ("parts/gpu-train/project/samples_per_s", "| {:.1f} samples/s")),
    ("docs/gpu.md", GPU_BENCHMARK, ("parts/gpu-inference/pipeline/reviews_per_s", "| {} (`pipeline`, batch 64)")),
]


CANDIDATES = {
    "r32_lr3e-4_6ep": "rank 32, learning rate 3e-4, 6 epochs",
    "r16_lr4e-4_6ep": "rank 16, learning rate 4e-4, 6 epochs",
    "r32_lr3e-4_4ep": "rank 32, learning rate 3e-4, 4 epochs",
}


def candidate_row(name: str):
    """A row of docs/gpu.md's quality table: validation accuracy, F1, ROC-AUC and the epoch of the best accuracy."""

    def row(record: dict) -> str:
        candidate = record["stages"]["quality"]["candidates"][name]
        validation = candidate["validation"]
        best = max(candidate["epochs_validation_accuracy"], key=lambda epoch: epoch["accuracy"])
        return "| {} | {:.4f} | {:.4f} | {:.4f} | {} |".format(
            CANDIDATES[name], validation["accuracy"], validation["f1"], validation["roc_auc"], int(best["epoch"])
        )

    return row


def training_range(record: dict) -> str:
    candidates = record["stages"]["quality"]["candidates"].values()
    seconds = [c["train_runtime_s"] for c in candidates]
    return f"bf16, {min(seconds):.0f}-{max(seconds):.0f} s of"


def training_speed_range(record: dict) -> str:
    rates = [c["train_samples_per_second"] for c in record["stages"]["quality"]["candidates"].values()]
    return f"training at {min(rates):.0f}-{max(rates):.0f} samples/s each"


def best_over_shipped(record: dict) -> str:
    quality = record["stages"]["quality"]
    difference = quality["best_validation_accuracy"] - quality["shipped_validation_accuracy"]
    return f"by {difference * 100:.2f} points of validation accuracy, {round(difference * 2500)} reviews of"


def standard_error(record: dict) -> str:
    accuracy = record["stages"]["quality"]["shipped_validation_accuracy"]
    return f"(one standard error is about {(accuracy * (1 - accuracy) / 2500) ** 0.5 * 100:.1f} points)"


def export_row(label: str, system: str, amx_off: bool = True):
    """A row of docs/export.md's table: reviews/s and the ratio to PyTorch fp32, with AMX and without."""

    def row(record: dict) -> str:
        cells = [label]
        for table in ("this_cpu", "amx_off") if amx_off else ("this_cpu",):
            figures = cpu_system(record, table, system)
            speed = figures["reviews_per_s"]
            cells += [f"{speed:.2f}", f"{speed / cpu_system(record, table, 'pytorch fp32')['reviews_per_s']:.2f}x"]
            if table == "this_cpu":
                cells.append(str(figures["labels_changed_vs_fp32"]))
        return "| " + " | ".join(cells) + " |"

    return row


QUOTES += [
    # docs/gpu.md: the GPU check's report (the first run), its benchmark rerun, the profile.
    (
        "docs/gpu.md",
        GPU_CHECK,
        lambda r: "(driver {}; torch {}, transformers {}, PEFT {},".format(
            r["machine"]["nvidia_smi"].split(", ")[1],
            r["machine"]["torch"],
            r["machine"]["transformers"],
            r["machine"]["peft"],
        ),
    ),
    ("docs/gpu.md", GPU_CHECK, lambda r: f"{r['machine']['cpu_cores']} CPU cores), {r['date'][:10]}. Raw reports"),
    ("docs/gpu.md", GPU_CHECK, lambda r: f"took {r['elapsed_s']:.0f} s of its {r['budget_s']:.0f} s budget"),
    (
        "docs/gpu.md",
        GPU_CHECK,
        lambda r: "`pytest -m gpu`: {passed} of {tests} passed, the stage {seconds} s".format(
            **r["stages"]["pytest"]["counts"], seconds=r["stages"]["pytest"]["seconds"]
        ),
    ),
    (
        "docs/gpu.md",
        GPU_BENCHMARK,
        lambda r: (
            "(bf16, SDPA, dynamic padding, length-grouped) | {:.1f} (tutorial: fp32, eager, padded to 512) | "
            "{:.2f}x | 2x: {} |".format(
                r["parts"]["gpu-train"]["tutorial"]["samples_per_s"],
                r["parts"]["gpu-train"]["samples_per_s_ratio"],
                "met" if r["targets"][0]["met"] else "missed",
            )
        ),
    ),
    (
        "docs/gpu.md",
        GPU_BENCHMARK,
        lambda r: "| {:,.0f} reviews/s (bf16, batch {}; first pass {:,.0f}/s) |".format(
            r["parts"]["gpu-inference"]["predictor"]["reviews_per_s"],
            r["parts"]["gpu-inference"]["batch_size"],
            r["parts"]["gpu-inference"]["predictor"]["cold_reviews_per_s"],
        ),
    ),
    (
        "docs/gpu.md",
        GPU_BENCHMARK,
        lambda r: "| {:.1f}x | 5,000/s: {} |".format(
            r["parts"]["gpu-inference"]["reviews_per_s_ratio"], "met" if r["targets"][1]["met"] else "missed"
        ),
    ),
    (
        "docs/gpu.md",
        GPU_BENCHMARK,
        lambda r: "Predictor {:.4f}, pipeline {:.4f}".format(
            r["parts"]["gpu-inference"]["predictor"]["accuracy"], r["parts"]["gpu-inference"]["pipeline"]["accuracy"]
        ),
    ),
    (
        "docs/gpu.md",
        GPU_BEFORE_FIX,
        lambda r: "missed both targets ({:.2f}x, {:.0f} reviews/s:".format(
            r["parts"]["gpu-train"]["samples_per_s_ratio"], r["parts"]["gpu-inference"]["reviews_per_s"]
        ),
    ),
    ("docs/gpu.md", GPU_PROFILE, ("inference/end_to_end_cold_s", "The same 4,000 reviews took {:.1f} s")),
    ("docs/gpu.md", GPU_PROFILE, ("inference/end_to_end_warm_s", "the first time and {:.1f} s the second")),
    (
        "docs/gpu.md",
        GPU_PROFILE,
        lambda r: "at batch 64, {distinct_shapes} distinct shapes cost {model_s:.1f} s of forward passes".format(
            **r["inference"]["forward_b64_multipleNone"]
        ),
    ),
    (
        "docs/gpu.md",
        GPU_PROFILE,
        lambda r: "{model_s:.2f} s for {distinct_shapes} shapes once lengths".format(
            **r["inference"]["forward_b64_multiple64"]
        ),
    ),
    ("docs/gpu.md", GPU_PROFILE, ("inference/forward_b64_multipleNone/pad_s", "{:.1f} s per pass. Since then")),
    ("docs/gpu.md", GPU_CHECK, training_range),
    ("docs/gpu.md", GPU_CHECK, training_speed_range),
    ("docs/gpu.md", GPU_CHECK, candidate_row("r32_lr3e-4_6ep")),
    ("docs/gpu.md", GPU_CHECK, candidate_row("r16_lr4e-4_6ep")),
    ("docs/gpu.md", GPU_CHECK, candidate_row("r32_lr3e-4_4ep")),
    (
        "docs/gpu.md",
        SHIPPED_METRICS,
        lambda r: (
            "| shipped: rank 32, learning rate 4e-4, 6 epochs | {accuracy:.4f} | {f1:.4f} | {roc_auc:.4f} |".format(
                **r["validation"]
            )
        ),
    ),
    ("docs/gpu.md", GPU_CHECK, best_over_shipped),
    ("docs/gpu.md", GPU_CHECK, standard_error),
    # docs/export.md: the rest of its CPU table and what it says about it.
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: f"--cpu-table`, {r['date'][:10]}, the {r['machine']['cpu_cores_available']}-core Xeon",
    ),
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: "| this export, fp32 (eager attention, fused) | {:.2f} | {:.2f}x |".format(
            cpu_system(r, "this_cpu", "onnxruntime fp32")["reviews_per_s"],
            r["parts"]["cpu-table"]["export_fp32_ratio_to_pytorch_fp32"],
        ),
    ),
    ("docs/export.md", CPU_TABLE, export_row("this export, int8, the gated scheme", "onnxruntime int8 (gated scheme)")),
    ("docs/export.md", CPU_TABLE, export_row("this export, int8, every matrix", "onnxruntime int8 (every matrix)")),
    ("docs/export.md", CPU_TABLE, export_row("PyTorch bf16 (the default with AMX)", "pytorch bf16", amx_off=False)),
    (
        "docs/export.md",
        CPU_TABLE,
        ("parts/cpu-table/export_fp32_ratio_to_pytorch_fp32", "fused fp32 graph runs at {:.2f}x PyTorch fp32"),
    ),
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: "bf16 with AMX runs at {:.2f}x PyTorch fp32 and {:.2f}x the export's fp32".format(
            cpu_system(r, "this_cpu", "pytorch bf16")["reviews_per_s"]
            / cpu_system(r, "this_cpu", "pytorch fp32")["reviews_per_s"],
            cpu_system(r, "this_cpu", "pytorch bf16")["reviews_per_s"]
            / cpu_system(r, "this_cpu", "onnxruntime fp32")["reviews_per_s"],
        ),
    ),
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: "(MLAS): {:.1f} against {:.1f} GFLOP/s".format(
            cpu_system(r, "this_cpu", "pytorch fp32")["gflop_per_s"],
            cpu_system(r, "this_cpu", "onnxruntime fp32")["gflop_per_s"],
        ),
    ),
    (
        "docs/export.md",
        INT8_GATE,
        lambda r: "attention projections, {} of 24 matrices".format(
            sum(role.startswith("layer.") for role in r["onnxruntime"]["keep_fp32"])
        ),
    ),
    (
        "docs/export.md",
        INT8_GATE,
        lambda r: "check on {:,} test reviews: {};".format(
            r["onnxruntime"]["test"]["reviews"], r["onnxruntime"]["test"]["labels_changed"]
        ),
    ),
    (
        "docs/export.md",
        EXPORT,
        lambda r: "trained_model --output /tmp/exported` on {}, its record".format(r["exported"]["date"][:10]),
    ),
    (
        "docs/export.md",
        EXPORT,
        lambda r: "onnxruntime {}, torch {} (CPU), the fused fp32 graph".format(
            r["exported"]["versions"]["onnxruntime"], r["exported"]["torch"].split("+")[0]
        ),
    ),
    (
        "docs/export.md",
        EXPORT,
        lambda r: "| the export's own check, {} reviews | {:.1e} | {} |".format(
            r["exported"]["parity_check"]["reviews"],
            r["exported"]["parity_check"]["max_abs_logit_diff"],
            "identical" if r["exported"]["parity_check"]["labels_identical"] else "differ",
        ),
    ),
    (
        "docs/export.md",
        INSTALL_EXPORT,
        lambda r: "adds {extra_adds_mb} MB to the {base_site_packages_mb:,} MB base install".format(**r),
    ),
]
