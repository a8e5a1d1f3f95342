"""docs/serving.md's, docs/evaluation.md's, docs/inference.md's, docs/reliability.md's and docs/faults.md's figures."""

from __future__ import annotations

from tests.quotes import (
    ADVISORIES,
    API_LOAD,
    BULK,
    CALIBRATION,
    CPU_TABLE,
    INSTALL,
    LOAD_MIXED,
    LOAD_MIXED_BEFORE,
    LOAD_TEST,
    LOAD_TEST_BEFORE,
    SHIPPED_BF16,
    SHIPPED_BF16_BEFORE,
    SHIPPED_METRICS,
    SHIPPED_TEST,
    api_row,
    cpu_system,
    points,
    read,
    shipped_row,
)

QUOTES = [
    ("docs/serving.md", API_LOAD, lambda r: api_row(r["clients"][0])),
    ("docs/serving.md", API_LOAD, lambda r: api_row(r["clients"][1])),
    ("docs/serving.md", API_LOAD, lambda r: api_row(r["clients"][2])),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: "| 32, batching off " + api_row(r["unbatched"]["unbatched_32_clients"])[5:],
    ),
    ("docs/serving.md", API_LOAD, ("unbatched/batched_over_unbatched", "Batching buys {:.2f}x")),
    ("docs/serving.md", API_LOAD, ("in_process/api_over_in_process", "is {:.2f}x the in-process Predictor")),
    ("docs/serving.md", API_LOAD, ("in_process/reviews_per_s", "against {:.2f} reviews/s on the same")),
    ("docs/serving.md", API_LOAD, ("burst/rss_growth", "+{:.2%} (limit 10%)")),
    ("docs/serving.md", API_LOAD, ("burst/statuses/503", "and {} x 503")),
    ("docs/serving.md", BULK, ("bulk_over_predict_file", "2 workers ran at {:.2f}x `predict.py --file`")),
    (
        "docs/serving.md",
        BULK,
        lambda r: f"({r['sentiment_bulk']['reviews_per_s']:.2f} against {r['predict_file']['reviews_per_s']:.2f}",
    ),
    ("docs/serving.md", BULK, ("sentiment_bulk/scoring_reviews_per_s", "{:.2f} reviews/s): the")),
    ("docs/serving.md", INSTALL, ("extra_adds_mb", "it adds {} MB to the virtual environment")),
    ("docs/serving.md", INSTALL, ("extra_install_s", "and took {} s from the package")),
    (
        "docs/evaluation.md",
        SHIPPED_TEST,
        lambda r: (
            shipped_row(r["metrics"])
            + " {:.4f} (raw {:.4f}) |".format(
                r["metrics"]["expected_calibration_error"],
                r["calibration"]["uncalibrated"]["expected_calibration_error"],
            )
        ),
    ),
    ("docs/evaluation.md", SHIPPED_TEST, ("metrics/temperature", "(T = {:.2f}, fitted on validation)")),
    (
        "docs/evaluation.md",
        SHIPPED_BF16,
        lambda r: (
            "accuracy\n{accuracy:.4f}, F1 {f1:.4f}, calibration error {expected_calibration_error:.4f}, log loss {log_loss:.4f}".format(
                **r["metrics"]
            )
        ),
    ),
    ("docs/evaluation.md", SHIPPED_BF16, ("metrics/numeric_precision", "In {}, the default on a CPU with AMX")),
]


def when(record: dict) -> str:
    """A record's date as the pages write it: day and minute, UTC."""
    return record["date"][:16].replace("T", " ") + " UTC"


def cpu_step(record: dict) -> tuple[float, int, float]:
    """The 32-client step of docs/serving.md: its seconds, the cores, and the CPU-seconds the roles used."""
    step = record["clients"][2]
    return (
        step["requests"] / step["reviews_per_s"],
        record["machine"]["cpu_cores_available"],
        sum(step["cpu_seconds_by_role"].values()),
    )


def roles(record: dict) -> str:
    cpu = record["clients"][2]["cpu_seconds_by_role"]
    ray = cpu["Serve controller"] + cpu["GCS"] + cpu["raylet"] + cpu["other Ray processes"]
    return f"raylet and\n  other Ray processes {ray:.1f}, the clients {cpu['load-test clients (this script)']:.1f};"


def load_span(template: str):
    """The load average at the start and at the end of a run (at the top of a record, or in its machine)."""

    def text(record: dict) -> str:
        where = record if "load_average_at_start" in record else record["machine"]
        return template.format(start=where["load_average_at_start"][0], end=where["load_average_at_end"][0])

    return text


def burst_clean(record: dict) -> str:
    burst = record["burst"]
    clean = burst["other_5xx"] == 0 and burst["connection_errors"] == 0
    every = burst["refusals_with_retry_after_and_json"] == burst["statuses"]["503"]
    return (
        "every 503\n  JSON with `Retry-After`; no other 5xx, no connection error"
        if clean and every
        else "(burst not clean)"
    )


QUOTES += [
    # docs/serving.md: the extra's install, the API's load test, bulk scoring.
    ("docs/serving.md", INSTALL, lambda r: f"json`, {r['date'][:10]}, the 2-core Xeon while other jobs ran"),
    ("docs/serving.md", INSTALL, ("load_average_at_start/0", "load average about {:.1f} at the start")),
    ("docs/serving.md", API_LOAD, lambda r: f"(records/api_load_test.json)): {when(r)}, the 2-core Intel"),
    ("docs/serving.md", API_LOAD, ("served/precision", "the shipped adapter in {} (`auto` here)")),
    (
        "docs/serving.md",
        API_LOAD,
        load_span("load average {start:.1f} at the start and {end:.1f} at the end"),
    ),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: "at 32 clients ({:.2f} against {:.2f} reviews/s)".format(
            r["clients"][2]["reviews_per_s"], r["unbatched"]["unbatched_32_clients"]["reviews_per_s"]
        ),
    ),
    ("docs/serving.md", API_LOAD, ("in_process/api_saturated_reviews_per_s", "Predictor** ({:.2f} against")),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: (
            f"(about {cpu_step(r)[0]:.0f} s, {cpu_step(r)[0] * cpu_step(r)[1]:.0f} CPU-seconds of {cpu_step(r)[1]} cores)"
        ),
    ),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: f"the rest, about {cpu_step(r)[0] * cpu_step(r)[1] - cpu_step(r)[2]:.0f}, idle",
    ),
    ("docs/serving.md", API_LOAD, ("clients/2/cpu_seconds_by_role/model replica", "the model\n  replica {:.1f},")),
    ("docs/serving.md", API_LOAD, ("clients/2/cpu_seconds_by_role/API ingress", "the FastAPI ingress {:.1f},")),
    ("docs/serving.md", API_LOAD, ("clients/2/cpu_seconds_by_role/HTTP proxy", "Serve's HTTP proxy {:.1f},")),
    ("docs/serving.md", API_LOAD, roles),
    ("docs/serving.md", API_LOAD, ("burst/requests", "A burst of {} single-review requests")),
    ("docs/serving.md", API_LOAD, ("burst/statuses/200", "{} x 200 and")),
    ("docs/serving.md", API_LOAD, burst_clean),
    ("docs/serving.md", API_LOAD, ("burst/slowest_answer_s", "the slowest answer {:.2f} s")),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: "resident memory went from {ray_rss_before_mb:,.1f} MB to {ray_rss_after_mb:,.1f} MB".format(
            **r["burst"]
        ),
    ),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: "read {NEGATIVE:.0f} NEGATIVE and {POSITIVE:.0f} POSITIVE from Prometheus".format(
            **r["label_counts"]
        ),
    ),
    ("docs/serving.md", BULK, lambda r: f"(records/bulk_compare.json)): {when(r)}, the same"),
    ("docs/serving.md", BULK, load_span("(load average {start:.1f} at the start, {end:.1f} at the end)")),
    ("docs/serving.md", BULK, ("reviews", "{:,} IMDb training reviews")),
    (
        "docs/serving.md",
        BULK,
        lambda r: (
            "{text_mismatches} text, {predicted_label_mismatches} label and {error_mismatches} error mismatches".format(
                **r["outputs"]
            )
        ),
    ),
    ("docs/serving.md", BULK, ("outputs/max_probability_difference", "probability\n  difference {:.0e}.")),
]


def fitted_on(record: dict) -> int:
    """The size of the split a temperature was fitted on ("validation split, n=2500")."""
    return int(record["fitted_on"].split("n=")[1])


def right(metrics: dict) -> int:
    return sum(metrics["confusion_matrix"][i][i] for i in range(len(metrics["confusion_matrix"])))


QUOTES += [
    # docs/evaluation.md: the test split (fp32, bf16), validation, the temperature.
    (
        "docs/evaluation.md",
        SHIPPED_TEST,
        lambda r: (
            f"no GPU, {r['run']['date'][:10]}, {r['speed']['reviews_per_second']:.1f} reviews/s while other jobs ran"
        ),
    ),
    (
        "docs/evaluation.md",
        SHIPPED_BF16,
        lambda r: f"the same\nmachine, {r['run']['date'][:10]}, after CPU batches were padded",
    ),
    (
        "docs/evaluation.md",
        SHIPPED_BF16_BEFORE,
        lambda r: "had {} fewer\nright than fp32".format(right(read(SHIPPED_TEST)["metrics"]) - right(r["metrics"])),
    ),
    (
        "docs/evaluation.md",
        SHIPPED_BF16,
        lambda r: "on the same {:,} reviews, {} fewer right than\nexact fp32 ({:.2f} points of accuracy)".format(
            r["metrics"]["num_examples"],
            right(read(SHIPPED_TEST)["metrics"]) - right(r["metrics"]),
            100 * (read(SHIPPED_TEST)["metrics"]["accuracy"] - r["metrics"]["accuracy"]),
        ),
    ),
    (
        "docs/evaluation.md",
        SHIPPED_TEST,
        lambda r: (
            "Confusion matrix (fp32): {:,} true negatives, {:,} false positives, {:,} false negatives, {:,} true positives.".format(
                *r["metrics"]["confusion_matrix"][0], *r["metrics"]["confusion_matrix"][1]
            )
        ),
    ),
    (
        "docs/evaluation.md",
        SHIPPED_METRICS,
        lambda r: "({num_examples:,} reviews: accuracy {accuracy:.4f}, F1 {f1:.4f};".format(**r["validation"]),
    ),
    (
        "docs/evaluation.md",
        CPU_TABLE,
        lambda r: "bf16, which changed {labels_changed_vs_fp32} of 1,000 test labels, {points} points".format(
            points=points(cpu_system(r, "this_cpu", "pytorch bf16")["accuracy_change_points"]),
            **cpu_system(r, "this_cpu", "pytorch bf16"),
        ),
    ),
    (
        "docs/evaluation.md",
        CALIBRATION,
        lambda r: f"The shipped adapter's T = {r['temperature']:.2f} was fitted before this",
    ),
    (
        "docs/evaluation.md",
        CALIBRATION,
        lambda r: (
            f"The shipped adapter: `T = {r['temperature']:.2f}`, fitted on its {fitted_on(r):,} validation reviews"
        ),
    ),
    (
        "docs/evaluation.md",
        CALIBRATION,
        lambda r: "| validation, {:,} reviews (fp32) | {:.4f} → {:.4f} | {:.4f} → {:.4f} | {:.4f} both |".format(
            fitted_on(r), r["ece_before"], r["ece_after"], r["nll_before"], r["nll_after"], r["split"]["accuracy"]
        ),
    ),
    (
        "docs/evaluation.md",
        SHIPPED_TEST,
        lambda r: "| test, {:,} reviews ({}) | {:.4f} → {:.4f} | {:.4f} → {:.4f} | {:.4f} both |".format(
            r["metrics"]["num_examples"],
            r["metrics"]["numeric_precision"],
            r["calibration"]["uncalibrated"]["expected_calibration_error"],
            r["metrics"]["expected_calibration_error"],
            r["calibration"]["uncalibrated"]["log_loss"],
            r["metrics"]["log_loss"],
            r["metrics"]["accuracy"],
        ),
    ),
]

QUOTES += [
    # docs/inference.md: what `auto` gives on the AMX Xeon.
    (
        "docs/inference.md",
        CPU_TABLE,
        lambda r: (
            "Intel AMX ({ratio_to_pipeline:.2f}x the pipeline on the\n  AMX Xeon, {labels_changed_vs_fp32} of 1,000 test labels changed against fp32".format(
                **cpu_system(r, "this_cpu", "pytorch bf16")
            )
        ),
    ),
]


def spread(values, scale: float = 1.0, digits: int = 1) -> str:
    """A range as the pages write it: smallest–largest."""
    return f"{min(values) / scale:,.{digits}f}–{max(values) / scale:,.{digits}f}"


def load_health(record: dict, joiner: str) -> str:
    checks = record["health_checks"]
    return f"{checks['ok']}{joiner}{checks['total']}"


def app_load(record: dict) -> str:
    settings, sent = record["settings"], record["predictions"]["sent"]
    return "{sessions} concurrent sessions x {predictions_per_session} reviews x {rounds} rounds = {sent} predictions".format(
        sent=sent, **settings
    )


def met(growth: float, limit: float) -> str:
    """A memory target as the pages judge it."""
    return "met" if abs(growth) <= limit else "missed"


def app_verdict(record: dict) -> str:
    """The plain load test's verdict and, when it failed, on what (its pass rule: every prediction answered,
    every health check ok, the memory trend within its limit)."""
    if record["passed"]:
        return "PASSED"
    missed = []
    if record["predictions"]["answered"] != record["predictions"]["sent"]:
        missed.append("predictions")
    if record["health_checks"]["ok"] != record["health_checks"]["total"]:
        missed.append("health checks")
    if record["memory"]["trend_over_the_run"] > record["memory"]["max_growth"]:
        missed.append("memory")
    return "FAILED, on " + (missed[0] + " alone" if len(missed) == 1 else " and ".join(missed))


def slow_checks(record: dict) -> str:
    """When the plain load test's health checks failed: one per round, or just how many."""
    failed, rounds = len(record["health_checks"]["failed_at_s"]), len(record["rounds"])
    return f"one at the start of each of the {rounds} rounds" if failed == rounds else f"{failed} in {rounds} rounds"


def mixed_memory(record: dict) -> str:
    memory = record["memory"]
    return "memory {rss_mb_before:,.1f} MiB before, peak {rss_mb_peak:,.1f} MiB\n  (limit {max_peak_mb:,}), {rss_mb_after:,.1f} MiB after (+{growth:.1%}, target {max_growth:.0%}): {verdict}".format(
        growth=memory["after_vs_before"], verdict="PASSED" if record["passed"] else "FAILED", **memory
    )


QUOTES += [
    # docs/reliability.md: the app's load tests, the audit snapshot.
    ("docs/reliability.md", LOAD_TEST, ("served/precision", "served in {}, `auto` on the 2-core Intel Xeon with AMX")),
    (
        "docs/reliability.md",
        LOAD_TEST,
        lambda r: (
            "ended {}, load average\n  {:.2f} to {:.2f}): ".format(
                when(r), r["machine"]["load_average_at_start"][0], r["machine"]["load_average_at_end"][0]
            )
            + app_load(r)
        ),
    ),
    (
        "docs/reliability.md",
        LOAD_TEST,
        lambda r: "{answered} answered, {errors} errors".format(**r["predictions"]),
    ),
    (
        "docs/reliability.md",
        LOAD_TEST,
        lambda r: "memory {:,.1f} MiB once ready, {} MiB at the peak of each round, {} MiB after each round's".format(
            r["memory"]["rss_mb_ready"],
            spread(r["memory"]["rss_mb_peak_of_each_round"]),
            spread(r["memory"]["rss_mb_settled_after_each_round"]),
        ),
    ),
    (
        "docs/reliability.md",
        LOAD_TEST,
        lambda r: "+{:.1%} over the run (target {:.0%}): {}".format(
            r["memory"]["trend_over_the_run"],
            r["memory"]["max_growth"],
            met(r["memory"]["trend_over_the_run"], r["memory"]["max_growth"]),
        ),
    ),
    (
        "docs/reliability.md",
        LOAD_TEST,
        lambda r: "{} health checks within {} s (p50\n  {} ms, p95 {} ms)".format(
            load_health(r, " of "),
            r["settings"]["health_timeout_s"],
            r["health_checks"]["latency_ms_p50"],
            r["health_checks"]["latency_ms_p95"],
        ),
    ),
    ("docs/reliability.md", LOAD_TEST, lambda r: f"{app_verdict(r)} ([Known gaps]"),
    (
        "docs/reliability.md",
        LOAD_TEST,
        lambda r: "20-way load: p50 {} s per round".format(spread([x["latency_ms_p50"] for x in r["rounds"]], 1000)),
    ),
    (
        "docs/reliability.md",
        LOAD_MIXED,
        lambda r: "ended {}, load average\n  {:.2f} to {:.2f})".format(
            when(r), r["machine"]["load_average_at_start"][0], r["machine"]["load_average_at_end"][0]
        ),
    ),
    (
        "docs/reliability.md",
        LOAD_MIXED,
        lambda r: "{sent} requests: {answered} answered, {refused_with_message} refused with a message".format(
            **r["requests"]
        ),
    ),
    (
        "docs/reliability.md",
        LOAD_MIXED,
        lambda r: "{} errors, {} tracebacks".format(
            r["requests"]["errors"], r["tracebacks"]["on_pages"] + r["tracebacks"]["in_server_output"]
        ),
    ),
    (
        "docs/reliability.md",
        LOAD_MIXED,
        lambda r: "health {} within 5 s (p50\n  {} ms, p95 {} ms; this test does not judge health)".format(
            load_health(r, "/"), r["health_checks"]["latency_ms_p50"], r["health_checks"]["latency_ms_p95"]
        ),
    ),
    ("docs/reliability.md", LOAD_MIXED, mixed_memory),
    (
        "docs/reliability.md",
        ADVISORIES,
        lambda r: "{}, {} advisories for its {} packages".format(
            r["date"], sum(len(v) for v in r["advisories"].values()), len(r["packages"])
        ),
    ),
]


def kind(record: dict, name: str) -> str:
    counts = record["requests"]["by_kind"][name]
    return f"{counts['answered']} / {counts['refused']}"


QUOTES += [
    # docs/faults.md: the app's load tests row by row, the bf16 growth they no longer show, the known gap they do.
    (
        "docs/faults.md",
        LOAD_TEST,
        lambda r: (
            "ended {} (load average {:.2f} at the start, {:.2f} at the end). {answered}/{sent} predictions answered with a label, {errors} errors.".format(
                when(r),
                r["machine"]["load_average_at_start"][0],
                r["machine"]["load_average_at_end"][0],
                **r["predictions"],
            )
        ),
    ),
    (
        "docs/faults.md",
        LOAD_TEST,
        lambda r: (
            "MiB): {:,.1f} once ready; peak per round {}; after each round's sessions were gone {}, a trend of +{:.1%} over the run (limit {:.0%}): {}.".format(
                r["memory"]["rss_mb_ready"],
                spread(r["memory"]["rss_mb_peak_of_each_round"]),
                ", ".join(f"{x:,.1f}" for x in r["memory"]["rss_mb_settled_after_each_round"]),
                r["memory"]["trend_over_the_run"],
                r["memory"]["max_growth"],
                met(r["memory"]["trend_over_the_run"], r["memory"]["max_growth"]),
            )
        ),
    ),
    (
        "docs/faults.md",
        LOAD_TEST,
        lambda r: "Health: {}/{} ok, p50 {} ms, p95 {} ms; the {} failures were checks slower than {} s, {}".format(
            r["health_checks"]["ok"],
            r["health_checks"]["total"],
            r["health_checks"]["latency_ms_p50"],
            r["health_checks"]["latency_ms_p95"],
            r["health_checks"]["total"] - r["health_checks"]["ok"],
            r["settings"]["health_timeout_s"],
            slow_checks(r),
        ),
    ),
    ("docs/faults.md", LOAD_TEST, lambda r: f"so the run is recorded as {app_verdict(r)} (see Known gaps)"),
    (
        "docs/faults.md",
        LOAD_TEST,
        lambda r: "p50 {} s, p95 {} s per round".format(
            spread([x["latency_ms_p50"] for x in r["rounds"]], 1000),
            spread([x["latency_ms_p95"] for x in r["rounds"]], 1000),
        ),
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: (
            "ended {} (load average {:.2f} at the start, {:.2f} at the end). {} requests in {} rounds: {} answered, {} refused with a message, {} errors; {} tracebacks".format(
                when(r),
                r["machine"]["load_average_at_start"][0],
                r["machine"]["load_average_at_end"][0],
                r["requests"]["sent"],
                r["settings"]["rounds"],
                r["requests"]["answered"],
                r["requests"]["refused_with_message"],
                r["requests"]["errors"],
                r["tracebacks"]["on_pages"] + r["tracebacks"]["in_server_output"],
            )
        ),
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: (
            f"typed reviews {kind(r, 'type')}; explanations {kind(r, 'explain')} and uploads scored {kind(r, 'upload')} (one heavy job"
        ),
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: f"Parquet bomb {kind(r, 'bomb')}; the 200 MB message {kind(r, 'big_message')} (",
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: (
            f"the 10 MB typed review {kind(r, 'long_review')} (cut, with the notice, predicted); the 10 MB one-line .txt upload {kind(r, 'long_upload')} ("
        ),
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: (
            "Health: {ok}/{total} ok, p50 {latency_ms_p50} ms, p95 {latency_ms_p95} ms (this test does not judge health).".format(
                **r["health_checks"]
            )
        ),
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: (
            "MiB): {rss_mb_ready:,.1f} ready, {rss_mb_before:,.1f} before (after one warm-up session), peak {rss_mb_peak_kernel_high_water_mark:,.1f} (the kernel's high-water mark; limit {max_peak_mb:,}), {rss_mb_after:,.1f} after round 2".format(
                **r["memory"]
            )
        ),
    ),
    (
        "docs/faults.md",
        LOAD_MIXED,
        lambda r: "+{:.1%}, {} the {:.0%} target: {}".format(
            r["memory"]["after_vs_before"],
            "within" if met(r["memory"]["after_vs_before"], r["memory"]["max_growth"]) == "met" else "over",
            r["memory"]["max_growth"],
            "PASSED, every target met" if r["passed"] else "FAILED",
        ),
    ),
    (
        "docs/faults.md",
        LOAD_TEST,
        lambda r: "Rerun (the rows above): +{:.1%} over six rounds and +{:.1%} over two, {} the target.".format(
            r["memory"]["trend_over_the_run"],
            read(LOAD_MIXED)["memory"]["after_vs_before"],
            "within"
            if max(r["memory"]["trend_over_the_run"], read(LOAD_MIXED)["memory"]["after_vs_before"])
            <= r["memory"]["max_growth"]
            else "not all within",
        ),
    ),
    (
        "docs/faults.md",
        LOAD_TEST,
        lambda r: (
            "{} of {} in the load test\n  ({}), which is therefore recorded as {}, and {} of {} in the mixed".format(
                r["health_checks"]["total"] - r["health_checks"]["ok"],
                r["health_checks"]["total"],
                "one as each round's 20 sessions opened"
                if len(r["health_checks"]["failed_at_s"]) == len(r["rounds"])
                else "{} in {} rounds".format(len(r["health_checks"]["failed_at_s"]), len(r["rounds"])),
                "FAILED" if not r["passed"] else "PASSED",
                read(LOAD_MIXED)["health_checks"]["total"] - read(LOAD_MIXED)["health_checks"]["ok"],
                read(LOAD_MIXED)["health_checks"]["total"],
            )
        ),
    ),
    (
        "docs/faults.md",
        ADVISORIES,
        lambda r: "commit {} of {}) each say".format(r["commit"][:7], r["date"]),
    ),
    ("docs/faults.md", ADVISORIES, lambda r: f"All {len(r['packages'])} packages in the snapshot (every pin, and pip)"),
    (
        "docs/faults.md",
        LOAD_TEST_BEFORE,
        lambda r: "memory grew +{:.1%} over six rounds and +{:.1%} over two".format(
            r["memory"]["trend_over_the_run"], read(LOAD_MIXED_BEFORE)["memory"]["after_vs_before"]
        ),
    ),
]
