"""docs/training.md's and docs/labels.md's figures: the shipped run, the star ratings, class weights."""

from __future__ import annotations

from tests.quotes import SHIPPED_CONFIG, SHIPPED_METRICS, STARS


def sweep_row(record: dict) -> str:
    """The shipped row of docs/training.md's sweep table: validation accuracy and F1, run time, samples/s."""
    return "| {:.4f} | {:.4f} | {:.0f} s | {:.0f} |".format(
        record["validation"]["accuracy"],
        record["validation"]["f1"],
        record["training"]["train_runtime_s"],
        record["training"]["train_samples_per_second"],
    )


QUOTES = [
    # docs/training.md: the shipped run, from the adapter's own records.
    ("docs/training.md", SHIPPED_METRICS, ("training/num_train_examples", "IMDb training split, {:,} reviews,")),
    (
        "docs/training.md",
        SHIPPED_METRICS,
        ("training/num_validation_examples", "with {:,} held out for model selection"),
    ),
    (
        "docs/training.md",
        SHIPPED_METRICS,
        lambda r: (
            "{device} ({train_runtime_s} s from loading the data to the last validation pass, "
            "{train_samples_per_second} training samples/s in the".format(**r["training"])
        ),
    ),
    ("docs/training.md", SHIPPED_METRICS, sweep_row),
    ("docs/training.md", SHIPPED_CONFIG, ("training/command", "```bash\n{}\n```")),
]

# docs/labels.md: the four-label star-rating run (train.py, then evaluate.py --record), its adapter's metrics.json.


def stars_validation_row(r: dict) -> str:
    v, c = r["validation"], r["calibration"]
    return "| validation | {:,} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} -> {:.4f} | {:.4f} -> {:.4f} |".format(
        v["num_examples"],
        v["accuracy"],
        v["macro_f1"],
        v["weighted_f1"],
        v["roc_auc"],
        c["nll_before"],
        c["nll_after"],
        c["ece_before"],
        c["ece_after"],
    )


def stars_test_row(r: dict) -> str:
    t, raw = r["test"], r["test"]["uncalibrated"]
    return "| test sample | {:,} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} -> {:.4f} | {:.4f} -> {:.4f} |".format(
        t["num_examples"],
        t["accuracy"],
        t["macro_f1"],
        t["weighted_f1"],
        t["roc_auc"],
        raw["log_loss"],
        t["log_loss"],
        raw["expected_calibration_error"],
        t["expected_calibration_error"],
    )


def stars_label_row(i: int):
    def row(r: dict) -> str:
        label, counts = r["test"]["per_label"][i], r["test"]["confusion_matrix"][i]
        cells = " | ".join(str(count) for count in counts)
        return f"| {label['label']} ({label['support']}) | {cells} | {label['recall']:.3f} | {label['f1']:.3f} |"

    return row


QUOTES += [
    ("docs/labels.md", STARS, ("test/run/command", "{}\n```")),
    (
        "docs/labels.md",
        STARS,
        lambda r: "labels are {terrible:,} terrible, {poor:,} poor, {good:,} good and {excellent:,} excellent".format(
            **r["training"]["label_counts"]
        ),
    ),
    (
        "docs/labels.md",
        STARS,
        lambda r: "Training ran on the {device} in {precision}: {train_runtime_s} s from loading the data".format(
            **r["training"]
        ),
    ),
    (
        "docs/labels.md",
        STARS,
        lambda r: "for {:,} reviews and {} held out ({} training samples/s in the Trainer)".format(
            r["training"]["num_train_examples"],
            r["training"]["num_validation_examples"],
            r["training"]["train_samples_per_second"],
        ),
    ),
    (
        "docs/labels.md",
        STARS,
        lambda r: "The evaluation, in {} too, ran on {} at {} UTC".format(
            r["test"]["numeric_precision"], r["test"]["run"]["date"][:10], r["test"]["run"]["date"][11:16]
        ),
    ),
    ("docs/labels.md", STARS, ("test/run/machine", "(machine as recorded: {}).")),
    ("docs/labels.md", STARS, ("test/data/num_examples", "fixed stratified {:,} of the 25,000 test reviews")),
    ("docs/labels.md", STARS, ("test/data/seed", "(`--limit 1000`, seed {}).")),
    (
        "docs/labels.md",
        STARS,
        ("test/temperature", "| log loss, T = 1 -> {0:.1f} | ECE, T = 1 -> {0:.1f} |"),
    ),
    ("docs/labels.md", STARS, stars_validation_row),
    ("docs/labels.md", STARS, stars_test_row),
    (
        "docs/labels.md",
        STARS,
        lambda r: "T = {:.1f} figures are held out: {}".format(
            r["calibration"]["temperature"], r["calibration"]["held_out_check"]["method"].split(",")[0]
        ),
    ),
    *[("docs/labels.md", STARS, stars_label_row(i)) for i in range(4)],
    (
        "docs/labels.md",
        STARS,
        lambda r: '(chance is 0.25 accuracy; {:.3f} for always "excellent")'.format(
            r["test"]["per_label"][3]["support"] / r["test"]["num_examples"]
        ),
    ),
    ("docs/labels.md", STARS, ("test/temperature", "The temperature is T = {:.1f}, the lower bound of the fit")),
]

# docs/labels.md: class weights on a 10:1 binary slice, one adapter's metrics.json per run.
WEIGHTS = {"none": "docs/records/class_weights_none.json", "balanced": "docs/records/class_weights_balanced.json"}


def weights_row(name: str):
    def row(r: dict) -> str:
        t, weights = r["test"], r["training"]["class_weights"]
        cell = name if weights is None else "{} ({})".format(name, ", ".join(f"{k} {v}" for k, v in weights.items()))
        return "| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |".format(
            cell, t["accuracy"], t["recall"], t["roc_auc"], t["expected_calibration_error"], t["log_loss"]
        )

    return row


def test_cell(r: dict, true: int, predicted: int) -> int:
    return r["test"]["confusion_matrix"][true][predicted]


QUOTES += [
    *[("docs/labels.md", record, ("test/run/command", "{}\n")) for record in WEIGHTS.values()],
    *[("docs/labels.md", record, weights_row(name)) for name, record in WEIGHTS.items()],
    (
        "docs/labels.md",
        WEIGHTS["none"],
        lambda r: (
            "trained on the {device} in {precision} on {num_train_examples} reviews with {num_validation_examples} held out".format(
                **r["training"]
            )
            + " ({} of them positive);".format(r["validation"]["per_label"][1]["support"])
        ),
    ),
    ("docs/labels.md", WEIGHTS["balanced"], ("training/num_train_examples", "on {} reviews with 99 held out")),
    ("docs/labels.md", WEIGHTS["none"], ("training/train_runtime_s", "the run without weights took {} s")),
    ("docs/labels.md", WEIGHTS["balanced"], ("training/train_runtime_s", "and the balanced one {} s (wall time")),
    (
        "docs/labels.md",
        WEIGHTS["none"],
        lambda r: "ran on {} at {} and".format(r["test"]["run"]["date"][:10], r["test"]["run"]["date"][11:16]),
    ),
    ("docs/labels.md", WEIGHTS["balanced"], lambda r: "and {} UTC".format(r["test"]["run"]["date"][11:16])),
    ("docs/labels.md", WEIGHTS["balanced"], ("test/run/machine", "(machine as recorded: {}). Neither run")),
    *[
        ("docs/labels.md", record, ("calibration/reason", "({}), so the test figures are at T = 1."))
        for record in WEIGHTS.values()
    ],
    (
        "docs/labels.md",
        WEIGHTS["none"],
        lambda r: f"({test_cell(r, 0, 0)} of 200 negatives right, {test_cell(r, 1, 1)} of 200 positives)",
    ),
    (
        "docs/labels.md",
        WEIGHTS["balanced"],
        lambda r: f"it found {test_cell(r, 1, 1)} of the 200 positives",
    ),
    ("docs/labels.md", WEIGHTS["balanced"], lambda r: f"and called {test_cell(r, 0, 1)} negatives positive"),
    (
        "docs/labels.md",
        WEIGHTS["none"],
        lambda r: "accuracy {:.3f} with {} of the {} positives found".format(
            r["validation"]["accuracy"],
            r["validation"]["confusion_matrix"][1][1] or "none",
            r["validation"]["per_label"][1]["support"],
        ),
    ),
    (
        "docs/labels.md",
        WEIGHTS["balanced"],
        lambda r: "against {:.3f} with {} of {}.".format(
            r["validation"]["accuracy"],
            r["validation"]["confusion_matrix"][1][1],
            r["validation"]["per_label"][1]["support"],
        ),
    ),
    (
        "docs/labels.md",
        WEIGHTS["none"],
        lambda r: "{NEGATIVE} negative and {POSITIVE} positive IMDb training reviews".format(
            **r["training"]["label_counts"]
        ),
    ),
    (
        "docs/labels.md",
        WEIGHTS["balanced"],
        lambda r: "scored on {} + {} test reviews".format(*(row["support"] for row in r["test"]["per_label"])),
    ),
]
