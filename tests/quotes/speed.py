"""docs/speed.md's figures: the CPU tables, the int8 gate and its check, CPU training, the GPU run."""

from __future__ import annotations

from tests.quotes import (
    CPU_TABLE,
    CPU_TABLE_BEFORE,
    CPU_TRAIN,
    GPU_BENCHMARK,
    INT8_GATE,
    cpu_system,
    points,
    read,
    speed_row,
)

QUOTES = [
    ("docs/speed.md", CPU_TABLE, speed_row("pipeline, batch 1", "pipeline")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch fp32", "pytorch fp32")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch bf16", "pytorch bf16")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch int8, gated scheme", "pytorch int8 (gated scheme)")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch int8, every matrix", "pytorch int8 (every matrix)")),
    ("docs/speed.md", CPU_TABLE, speed_row("export, fp32", "onnxruntime fp32")),
    ("docs/speed.md", CPU_TABLE, speed_row("export, int8 gated scheme", "onnxruntime int8 (gated scheme)")),
    ("docs/speed.md", CPU_TABLE, speed_row("export, int8 every matrix", "onnxruntime int8 (every matrix)")),
    (
        "docs/speed.md",
        CPU_TABLE,
        ("parts/cpu-table/this_cpu/machine_limit/fp32_gemm_gflop_per_s", "fp32 GEMM {} GFLOP/s"),
    ),
    ("docs/speed.md", CPU_TABLE, ("parts/cpu-table/this_cpu/machine_limit/bf16_gemm_gflop_per_s", "bf16 {:,}")),
    (
        "docs/speed.md",
        CPU_TABLE,
        ("parts/cpu-table/export_fp32_ratio_to_pytorch_fp32", "fp32 runs at {:.2f}x PyTorch fp32"),
    ),
    (
        "docs/speed.md",
        CPU_TABLE,
        ("parts/cpu-table/amx_off_export_fp32_ratio_to_pytorch_fp32", "({:.2f}x with AMX off)"),
    ),
    ("docs/speed.md", INT8_GATE, ("pytorch/validation/labels_changed", "**{} (0.36%)**")),
    ("docs/speed.md", INT8_GATE, ("onnxruntime/validation/labels_changed", "**{} (0.28%)**")),
    ("docs/speed.md", INT8_GATE, ("pytorch/validation/accuracy", "| {:.4f} (+0.20 points) |")),
    ("docs/speed.md", INT8_GATE, ("onnxruntime/test/labels_changed", "the onnxruntime scheme held ({} of 1,000")),
    ("docs/speed.md", INT8_GATE, ("pytorch/test/labels_changed", "the PyTorch scheme did not ({} of 1,000")),
    ("docs/speed.md", INT8_GATE, lambda r: f"and {points(r['pytorch']['test']['accuracy_change_points'])} points)"),
]


PAGE = "docs/speed.md"


def signed(value):
    """An accuracy change with its sign always shown, as the int8 tables write it."""
    return f"{value:+.2f}".replace("-", "−")


def table_end(r):
    """When the CPU table's part ended: its start plus the seconds it took, as HH:MM."""
    import datetime

    start = datetime.datetime.fromisoformat(r["date"])
    return (start + datetime.timedelta(seconds=r["parts"]["cpu-table"]["part_s"])).strftime("%H:%M")


def auto_cells(r, table):
    """The reviews/s and ratio cells of the row `auto` served in one half of the CPU table, with its note."""
    figures = cpu_system(r, table, r["parts"]["cpu-table"][table]["default"]["system"])
    return "| **{:.2f}** | **{:.2f}x** (`auto`) |".format(figures["reviews_per_s"], figures["ratio_to_pipeline"])


def kl_rows(r):
    """docs/speed.md's table of each matrix alone: mean KL (labels changed), rows per backend and layer."""
    names = {"pytorch": "PyTorch", "onnxruntime": "onnxruntime"}
    roles = ("attention.qkv", "attention.output", "ffn.in", "ffn.out")
    rows = []
    for backend, label in names.items():
        scan = {s["role"]: s for s in r[backend]["scan"]}
        for layer in range(6):
            cells = [f"{label}, {layer}"]
            for role in roles:
                s = scan[f"layer.{layer}.{role}"]
                cells.append(f"{s['mean_kl']:.1e} ({s['labels_changed']})")
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def scheme_test_cells(r, backend):
    test = r[backend]["test"]
    return (
        f"| {test['labels_changed']} ({test['labels_changed'] / test['reviews']:.1%}) | "
        f"{test['accuracy']:.4f} ({points(test['accuracy_change_points'])} points) |"
    )


def kept_fp32(r, backend):
    matrices = [m for m in r[backend]["keep_fp32"] if m.startswith("layer.")]
    return f"({len(matrices)} of 24"


QUOTES += [
    # At a glance.
    (
        PAGE,
        CPU_TABLE,
        lambda r: "met: {:.2f}x in bf16, {} points ({} of 1,000 labels changed;".format(
            r["parts"]["cpu-table"]["default_ratio"],
            points(r["parts"]["cpu-table"]["default_accuracy_change_points"]),
            cpu_system(r, "this_cpu", "pytorch bf16")["labels_changed_vs_fp32"],
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: (
            "exact fp32 {:.2f}x; the export's gated int8 {:.2f}x, {} points; PyTorch's gated int8 {:.2f}x but {} points".format(
                cpu_system(r, "amx_off", "pytorch fp32")["ratio_to_pipeline"],
                cpu_system(r, "amx_off", "onnxruntime int8 (gated scheme)")["ratio_to_pipeline"],
                points(cpu_system(r, "amx_off", "onnxruntime int8 (gated scheme)")["accuracy_change_points"]),
                cpu_system(r, "amx_off", "pytorch int8 (gated scheme)")["ratio_to_pipeline"],
                points(cpu_system(r, "amx_off", "pytorch int8 (gated scheme)")["accuracy_change_points"]),
            )
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        ("parts/cpu-table/export_fp32_ratio_to_pytorch_fp32", "fp32 at {:.2f}x PyTorch fp32 ([export.md]"),
    ),
    (
        PAGE,
        CPU_TABLE,
        ("parts/cpu-table/amx_off_export_fp32_ratio_to_pytorch_fp32", "fp32 at {:.2f}x PyTorch fp32 (AMX off)"),
    ),
    # How 'auto' chooses.
    (
        PAGE,
        GPU_BENCHMARK,
        lambda r: "| {:.2f}x training, {:,.0f} reviews/s inference on an H100".format(
            r["parts"]["gpu-train"]["samples_per_s_ratio"], r["parts"]["gpu-inference"]["reviews_per_s"]
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "| {:.2f}x the pipeline, {} of 1,000 test labels changed".format(
            r["parts"]["cpu-table"]["default_ratio"],
            cpu_system(r, "this_cpu", "pytorch bf16")["labels_changed_vs_fp32"],
        ),
    ),
    (
        PAGE,
        INT8_GATE,
        lambda r: "test check ({} of 1,000 test labels\nchanged, accuracy {:.2f} points: failed)".format(
            r["pytorch"]["test"]["labels_changed"], r["pytorch"]["test"]["accuracy_change_points"]
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "({:,} against {} GFLOP/s in".format(
            r["parts"]["cpu-table"]["this_cpu"]["machine_limit"]["bf16_gemm_gflop_per_s"],
            r["parts"]["cpu-table"]["this_cpu"]["machine_limit"]["fp32_gemm_gflop_per_s"],
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "changed {} of the 1,000 test labels, {} points".format(
            cpu_system(r, "this_cpu", "pytorch bf16")["labels_changed_vs_fp32"],
            points(cpu_system(r, "this_cpu", "pytorch bf16")["accuracy_change_points"]),
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: (
            f"ran at {cpu_system(r, 'amx_off', 'pytorch bf16')['ratio_to_pipeline']:.2f}x the pipeline in the same run"
        ),
    ),
    # The CPU table: when, load, the int8 limit, what it says.
    (
        PAGE,
        CPU_TABLE,
        lambda r: "--output docs/records/cpu_table.json`, {}\nto {} UTC".format(
            r["date"][:16].replace("T", " "), table_end(r)
        ),
    ),
    (PAGE, CPU_TABLE, ("load_average_at_start/0", "(load average {} at the start")),
    (PAGE, CPU_TABLE, ("load_average_at_end/0", "two threads {} at the end)")),
    (
        PAGE,
        CPU_TABLE,
        ("parts/cpu-table/this_cpu/machine_limit/int8_dynamic_gop_per_s", "int8 {} GOP/s) are in the record"),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: f"The pipeline's {cpu_system(r, 'this_cpu', 'pipeline')['labels_changed_vs_fp32']} changed labels",
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "bf16 at {:.2f}x the pipeline, {} points ({} of 1,000 labels changed)".format(
            r["parts"]["cpu-table"]["default_ratio"],
            points(r["parts"]["cpu-table"]["default_accuracy_change_points"]),
            cpu_system(r, "this_cpu", "pytorch bf16")["labels_changed_vs_fp32"],
        ),
    ),
    # The check on the bf16 path against the run before the padding (its record: CPU_TABLE_BEFORE).
    (
        PAGE,
        CPU_TABLE,
        lambda r: "one {:.2f} reviews/s, {:.2f}x, {}.".format(
            cpu_system(r, "this_cpu", "pytorch bf16")["reviews_per_s"],
            cpu_system(r, "this_cpu", "pytorch bf16")["ratio_to_pipeline"],
            cpu_system(r, "this_cpu", "pytorch bf16")["labels_changed_vs_fp32"] or "none",
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        (
            "parts/cpu-table/this_cpu/machine_limit/fp32_gemm_gflop_per_s",
            "{} GFLOP/s, so reviews/s from different runs do not compare",
        ),
    ),
    (
        PAGE,
        CPU_TABLE_BEFORE,
        lambda r: "gave bf16 {:.2f} reviews/s, {:.2f}x the pipeline, {} label changed".format(
            cpu_system(r, "this_cpu", "pytorch bf16")["reviews_per_s"],
            cpu_system(r, "this_cpu", "pytorch bf16")["ratio_to_pipeline"],
            cpu_system(r, "this_cpu", "pytorch bf16")["labels_changed_vs_fp32"],
        ),
    ),
    (
        PAGE,
        CPU_TABLE_BEFORE,
        ("parts/cpu-table/this_cpu/machine_limit/fp32_gemm_gflop_per_s", "in each run went from\n  {} to"),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "from {:.2f}x\n  to {:.2f}x the (unpadded) pipeline".format(
            read(CPU_TABLE_BEFORE)["parts"]["cpu-table"]["default_ratio"], r["parts"]["cpu-table"]["default_ratio"]
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "gated int8 from {:.2f}x to {:.2f}x)".format(
            cpu_system(read(CPU_TABLE_BEFORE), "this_cpu", "onnxruntime int8 (gated scheme)")["ratio_to_pipeline"],
            cpu_system(r, "this_cpu", "onnxruntime int8 (gated scheme)")["ratio_to_pipeline"],
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "({}x, recorded as {})".format(
            r["targets"][0]["target"].split()[-1], "met" if r["targets"][0]["met"] else "missed"
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "is exact fp32, {:.2f}x (`auto` chose it in this".format(
            cpu_system(r, "amx_off", r["parts"]["cpu-table"]["amx_off"]["default"]["system"])["ratio_to_pipeline"]
        ),
    ),
    (PAGE, CPU_TABLE, lambda r: auto_cells(r, "this_cpu")),
    (PAGE, CPU_TABLE, lambda r: auto_cells(r, "amx_off")),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "every matrix {} 2x here,\n  {:.2f}x at {} points, but it moved {} of the 1,000 labels".format(
            "passed"
            if cpu_system(r, "amx_off", "onnxruntime int8 (every matrix)")["ratio_to_pipeline"] >= 2
            else "missed",
            cpu_system(r, "amx_off", "onnxruntime int8 (every matrix)")["ratio_to_pipeline"],
            points(cpu_system(r, "amx_off", "onnxruntime int8 (every matrix)")["accuracy_change_points"]),
            cpu_system(r, "amx_off", "onnxruntime int8 (every matrix)")["labels_changed_vs_fp32"],
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "ran at {:.2f}x but moved {} labels, all of them wrong, so it lost {:.2f} points".format(
            cpu_system(r, "amx_off", "pytorch int8 (gated scheme)")["ratio_to_pipeline"],
            cpu_system(r, "amx_off", "pytorch int8 (gated scheme)")["labels_changed_vs_fp32"],
            -cpu_system(r, "amx_off", "pytorch int8 (gated scheme)")["accuracy_change_points"],
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "{:.2f}x ({} labels, {} points)".format(
            cpu_system(r, "amx_off", "onnxruntime int8 (gated scheme)")["ratio_to_pipeline"],
            cpu_system(r, "amx_off", "onnxruntime int8 (gated scheme)")["labels_changed_vs_fp32"],
            points(cpu_system(r, "amx_off", "onnxruntime int8 (gated scheme)")["accuracy_change_points"]),
        ),
    ),
    # int8 that keeps the labels.
    (PAGE, INT8_GATE, lambda r: f"Run on the 2-core Xeon, {r['date'][:10]}"),
    (PAGE, INT8_GATE, kl_rows),
    (
        PAGE,
        INT8_GATE,
        lambda r: "{} and {} of 500 labels changed, against {} and {})".format(
            r["onnxruntime"]["steps"][0]["mean_kl"],
            r["onnxruntime"]["steps"][0]["labels_changed"],
            r["pytorch"]["steps"][0]["mean_kl"],
            r["pytorch"]["steps"][0]["labels_changed"],
        ),
    ),
    (
        PAGE,
        INT8_GATE,
        lambda r: "one matrix alone ({} to {} of 500)".format(
            min(s["labels_changed"] for b in ("pytorch", "onnxruntime") for s in r[b]["scan"]),
            max(s["labels_changed"] for b in ("pytorch", "onnxruntime") for s in r[b]["scan"]),
        ),
    ),
    (PAGE, INT8_GATE, lambda r: f"| accuracy (fp32 {r['fp32']['accuracy']:.4f}) | test, 1,000"),
    (PAGE, INT8_GATE, ("pytorch/test/fp32_accuracy", "| accuracy (fp32 {:.4f}) |\n")),
    (PAGE, INT8_GATE, lambda r: kept_fp32(r, "pytorch") + " matrices)"),
    (PAGE, INT8_GATE, lambda r: kept_fp32(r, "onnxruntime") + ")"),
    (PAGE, INT8_GATE, lambda r: "0.36%)** | 0.9340 (+0.20 points) " + scheme_test_cells(r, "pytorch")),
    (
        PAGE,
        INT8_GATE,
        lambda r: (
            "0.28%)** | {:.4f} ({} points) ".format(
                r["onnxruntime"]["validation"]["accuracy"],
                signed(r["onnxruntime"]["validation"]["accuracy_change_points"]),
            )
            + scheme_test_cells(r, "onnxruntime")
        ),
    ),
    (
        PAGE,
        CPU_TABLE,
        lambda r: "the same 1,000 reviews gave {} points".format(
            points(cpu_system(r, "amx_off", "pytorch int8 (gated scheme)")["accuracy_change_points"])
        ),
    ),
    # GPU benchmarks.
    (
        PAGE,
        GPU_BENCHMARK,
        lambda r: "On one H100, {}, with `--gpu-reviews {}`, they gave {:.2f}x and {:,.0f} reviews/s".format(
            r["date"][:10],
            r["parts"]["gpu-inference"]["reviews"],
            r["parts"]["gpu-train"]["samples_per_s_ratio"],
            r["parts"]["gpu-inference"]["reviews_per_s"],
        ),
    ),
]

# CPU training, from the quiet --cpu-train run.


def train_row(n):
    def row(r):
        m = r["parts"]["cpu-train"]["lengths"][n]
        verdict = "met" if m["samples_per_s_ratio"] >= 2.0 else "missed"
        return "| {} tokens | {:.2f} samples/s | {:.2f} | {:.2f}x | {} | {:.2f} ({:.2f}x) |".format(
            n,
            m["project"]["samples_per_s"],
            m["before"]["samples_per_s"],
            m["samples_per_s_ratio"],
            verdict,
            m["project_fp32"]["samples_per_s"],
            m["samples_per_s_ratio_fp32"],
        )

    return row


def run_end(r):
    import datetime

    start = datetime.datetime.fromisoformat(r["date"])
    return (start + datetime.timedelta(seconds=r["parts"]["cpu-train"]["part_s"])).strftime("%H:%M")


def verdict(r, i):
    return "met" if r["targets"][i]["met"] else "missed"


def train_ratio(r, n, key="samples_per_s_ratio"):
    return r["parts"]["cpu-train"]["lengths"][n][key]


QUOTES += [
    (PAGE, CPU_TRAIN, train_row("256")),
    (PAGE, CPU_TRAIN, train_row("512")),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "{} at 256 tokens, {:.2f}x; {} at 512, {:.2f}x (2026-12-02, [record](records/cpu_train.json))".format(
            verdict(r, 0),
            r["parts"]["cpu-train"]["samples_per_s_ratio_256"],
            verdict(r, 1),
            r["parts"]["cpu-train"]["samples_per_s_ratio_512"],
        ),
    ),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "the cheaper dropout alone gave {:.2f}x and {:.2f}x (measured in fp32 on the Xeon".format(
            train_ratio(r, "256", "samples_per_s_ratio_fp32"), train_ratio(r, "512", "samples_per_s_ratio_fp32")
        ),
    ),
    (PAGE, CPU_TRAIN, lambda r: f"`{r['command']}`,\n{r['date'][:16].replace('T', ' ')} to {run_end(r)} UTC"),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: f"PyTorch {r['machine']['torch'].split('+')[0]} with {r['parts']['cpu-train']['threads']} threads",
    ),
    (PAGE, CPU_TRAIN, ("load_average_at_start/0", "(load average {} at the start")),
    (PAGE, CPU_TRAIN, ("load_average_at_end/0", "two threads {} at the end). It runs")),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "shape: fp32 {} GFLOP/s, bf16 {:,} GFLOP/s;".format(
            r["parts"]["cpu-train"]["machine_limit"]["fp32_gemm_gflop_per_s"],
            r["parts"]["cpu-train"]["machine_limit"]["bf16_gemm_gflop_per_s"],
        ),
    ),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "runs at {} of the fp32\nlimit ({} of the bf16 one), before at {}; at 512, {} against {}.".format(
            r["parts"]["cpu-train"]["lengths"]["256"]["project"]["fraction_of_limit"],
            r["parts"]["cpu-train"]["lengths"]["256"]["project"]["fraction_of_bf16_limit"],
            r["parts"]["cpu-train"]["lengths"]["256"]["before"]["fraction_of_limit"],
            r["parts"]["cpu-train"]["lengths"]["512"]["project"]["fraction_of_limit"],
            r["parts"]["cpu-train"]["lengths"]["512"]["before"]["fraction_of_limit"],
        ),
    ),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "the cheaper dropout alone at {:.2f}x (256 tokens) and {:.2f}x (512)".format(
            train_ratio(r, "256", "samples_per_s_ratio_fp32"), train_ratio(r, "512", "samples_per_s_ratio_fp32")
        ),
    ),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "to {:.2f}x at 256 tokens but {:.2f}x at 512 in this run".format(
            train_ratio(r, "256"), train_ratio(r, "512")
        ),
    ),
    (
        PAGE,
        CPU_TRAIN,
        lambda r: "that alone gave {:.2f}x at 256 tokens and {:.2f}x at 512".format(
            train_ratio(r, "256", "samples_per_s_ratio_fp32"), train_ratio(r, "512", "samples_per_s_ratio_fp32")
        ),
    ),
]
