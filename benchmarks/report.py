"""The printed summary of a benchmark report: one markdown row per figure (what, this project, the baseline,
the ratio), a function per part, then one line per target."""

from __future__ import annotations

from collections.abc import Callable

HEADER = ("part", "measure", "this project", "baseline", "ratio")
Row = tuple[str, str, str, str]  # measure, this project, baseline, ratio: the part's name goes in front


def fmt(value, unit: str = "") -> str:
    """A figure for the table: floats with two decimals and thousands separators, None as a dash."""
    if value is None:
        return "–"
    return f"{value:,.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def inference_rows(result: dict) -> list[Row]:
    s = result["systems"]
    p, e, i, b = s["predictor"], s["predictor_fp32"], s["predictor_int8"], s["pipeline"]
    precision = result["predictor_precision"]
    bf16 = f"; of the bf16 limit {fmt(p['fraction_of_bf16_limit'])}" if "fraction_of_bf16_limit" in p else ""
    return [
        (
            f"throughput, {result['reviews']} reviews (reviews/s)",
            f"{fmt(p['reviews_per_s'])} ({precision}, default); "
            f"{fmt(e['reviews_per_s'])} (fp32); {fmt(i['reviews_per_s'])} (int8)",
            f"{fmt(b['reviews_per_s'])} (pipeline, batch {result['pipeline_batch_size']})",
            f"{fmt(result['throughput_ratio'])}x; fp32 {fmt(result['throughput_ratio_fp32'])}x; "
            f"int8 {fmt(result['throughput_ratio_int8'])}x",
        ),
        (
            f"single-review latency p50, {result['latency_reviews']} reviews",
            f"{fmt(p['latency']['p50_ms'], ' ms')}; fp32 {fmt(e['latency']['p50_ms'], ' ms')}",
            fmt(b["latency"]["p50_ms"], " ms"),
            fmt(result["latency_p50_ratio"]),
        ),
        (
            "single-review latency p95",
            f"{fmt(p['latency']['p95_ms'], ' ms')}; fp32 {fmt(e['latency']['p95_ms'], ' ms')}",
            fmt(b["latency"]["p95_ms"], " ms"),
            fmt(result["latency_p95_ratio"]),
        ),
        (
            f"fraction of the fp32 limit ({result['machine_limit']['fp32_gemm_gflop_per_s']} GFLOP/s)",
            f"{fmt(p['fraction_of_limit'])} ({precision}{bf16}); "
            f"{fmt(e['fraction_of_limit'])} (fp32); {fmt(i['fraction_of_limit'])} (int8)",
            fmt(b["fraction_of_limit"]),
            "",
        ),
        (
            "accuracy",
            f"{p['accuracy']:.4f} ({precision}: {result['accuracy_change_points']:+.2f} points, "
            f"{result['labels_changed_vs_fp32']} labels changed); fp32 {e['accuracy']:.4f}; int8 "
            f"{i['accuracy']:.4f} ({result['int8_accuracy_change_points']:+.2f}, "
            f"{result['int8_labels_changed_vs_fp32']} changed)",
            f"{b['accuracy']:.4f}",
            "",
        ),
        ("int8", result["int8_verdict"], "", ""),
        (f"default precision: {precision}", result["predictor_precision_reason"], "", ""),
    ]


def onnx_rows(result: dict) -> list[Row]:
    o, e = result["systems"]["onnxruntime"], result["systems"]["predictor_fp32"]
    return [
        (
            f"throughput, {result['reviews']} reviews (reviews/s)",
            f"{fmt(o['reviews_per_s'])} (onnxruntime)",
            f"{fmt(e['reviews_per_s'])} (PyTorch fp32)",
            f"{fmt(result['throughput_ratio'])}x",
        ),
        ("fraction of the fp32 limit", fmt(o["fraction_of_limit"]), fmt(e["fraction_of_limit"]), ""),
        (
            "max |logit difference|, labels changed",
            f"{result['max_abs_logit_diff']:.1e}, {result['labels_changed_vs_fp32']}",
            "",
            "",
        ),
    ]


def serving_table_rows(table: dict, label: str) -> list[Row]:
    """One row per way of serving, against the pipeline; the default marked, then why it is the default."""
    pipeline, default, rows = table["systems"]["pipeline"], table["default"]["system"], []
    for name, system in table["systems"].items():
        if name == "pipeline":
            continue
        limit = f"{fmt(system['fraction_of_limit'])} of the fp32 limit"
        for kind in ("int8", "bf16"):
            if f"fraction_of_{kind}_limit" in system:
                limit += f", {fmt(system[f'fraction_of_{kind}_limit'])} of the {kind} one"
        rows.append(
            (
                f"{label}{name}{' (default)' if name == default else ''}, {table['reviews']} reviews (reviews/s)",
                f"{fmt(system['reviews_per_s'])} (accuracy {system['accuracy']:.4f}, "
                f"{system['labels_changed_vs_fp32']} labels changed; {limit})",
                f"{fmt(pipeline['reviews_per_s'])} (pipeline, accuracy {pipeline['accuracy']:.4f})",
                f"{fmt(system['ratio_to_pipeline'])}x",
            )
        )
    rows.append((f"{label}default here: {table['default']['precision']}", table["default"]["reason"], "", ""))
    return rows


def cpu_table_rows(result: dict) -> list[Row]:
    """The table on this CPU, then with AMX off (or why that variant was skipped)."""
    rows = serving_table_rows(result["this_cpu"], "")
    amx_off = result["amx_off"]
    if "systems" in amx_off:
        return rows + serving_table_rows(amx_off, "AMX off: ")
    return [*rows, ("AMX off", amx_off.get("skipped", ""), "", "")]


def cli_rows(result: dict) -> list[Row]:
    c, b = result["predict_cli"], result["pipeline_script"]
    return [
        (
            f"whole process, {result['reviews']} reviews (wall s)",
            f"{c['wall_s']:.1f} s (accuracy {c['accuracy']:.4f})",
            f"{b['wall_s']:.1f} s (accuracy {b['accuracy']:.4f})",
            f"{fmt(result['speedup'])}x faster",
        )
    ]


def app_rows(result: dict) -> list[Row]:
    first, latency = result["start_to_first_prediction"], result["per_request"]["latency"]
    return [
        (
            "`streamlit run` to first prediction",
            fmt(first.get("seconds"), " s") if "seconds" in first else first.get("skipped"),
            "",
            "",
        ),
        (
            f"per request p50 / p95 ({latency['count']} requests, AppTest)",
            f"{latency['p50_ms']:.0f} / {latency['p95_ms']:.0f} ms",
            "",
            fmt(result.get("per_request_p50_ratio_to_pipeline")),
        ),
    ]


def cpu_train_rows(result: dict) -> list[Row]:
    limit, rows = result["machine_limit"], []
    for length, measured in result["lengths"].items():
        p, b = measured["project"], measured["before"]
        rows.append(
            (
                f"training samples/s at {length} tokens (batch {result['batch_size']})",
                f"{fmt(p['samples_per_s'])} ({p['precision']})",
                f"{fmt(b['samples_per_s'])} (fp32, PyTorch dropout)",
                f"{fmt(measured['samples_per_s_ratio'])}x",
            )
        )
        if "project_fp32" in measured:
            rows.append(
                (
                    f"the same in fp32 at {length} tokens (cheap dropout alone: a CPU without AMX)",
                    fmt(measured["project_fp32"]["samples_per_s"]),
                    fmt(b["samples_per_s"]),
                    f"{fmt(measured['samples_per_s_ratio_fp32'])}x",
                )
            )
        bf16 = bool(p.get("fraction_of_bf16_limit"))
        rows.append(
            (
                f"fraction of the fp32 limit ({limit['fp32_gemm_gflop_per_s']} GFLOP/s)"
                + (f"; of bf16 ({limit['bf16_gemm_gflop_per_s']})" if bf16 else ""),
                fmt(p["fraction_of_limit"]) + (f"; bf16 {fmt(p['fraction_of_bf16_limit'])}" if bf16 else ""),
                fmt(b["fraction_of_limit"]),
                "",
            )
        )
    return rows


def gpu_train_rows(result: dict) -> list[Row]:
    return [
        (
            f"training samples/s ({result['device']})",
            fmt(result["project"]["samples_per_s"]),
            fmt(result["tutorial"]["samples_per_s"]),
            f"{fmt(result['samples_per_s_ratio'])}x",
        )
    ]


def gpu_inference_rows(result: dict) -> list[Row]:
    return [
        (
            f"inference reviews/s ({result['device']})",
            fmt(result["predictor"]["reviews_per_s"]),
            fmt(result["pipeline"]["reviews_per_s"]),
            f"{fmt(result['reviews_per_s_ratio'])}x",
        )
    ]


SECTIONS: dict[str, Callable[[dict], list[Row]]] = {
    "inference": inference_rows,
    "cpu-table": cpu_table_rows,
    "onnx": onnx_rows,
    "cli": cli_rows,
    "app": app_rows,
    "cpu-train": cpu_train_rows,
    "gpu-train": gpu_train_rows,
    "gpu-inference": gpu_inference_rows,
}


def part_rows(part: str, result: dict) -> list[tuple]:
    """A part's rows, its name in front; a part skipped or failed gets one row saying why."""
    if "skipped" in result or "error" in result:
        status = "skipped" if "skipped" in result else "error"
        return [(part, status, result.get("skipped") or result.get("error"), "", "")]
    return [(part, *row) for row in SECTIONS[part](result)] if part in SECTIONS else []


def target_lines(targets: list[dict]) -> list[str]:
    lines = []
    for target in targets:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        lines.append(f"target {target['part']} {target['figure']} {target['target']}: {target['value']} -> {verdict}")
    return lines


def table(report: dict) -> str:
    """The results as a markdown table: what, this project, the baseline, the ratio; then the targets."""
    rows = [HEADER, ("---",) * 5]
    for part, result in report["parts"].items():
        rows += part_rows(part, result)
    lines = ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines + target_lines(report["targets"]))
