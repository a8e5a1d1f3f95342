"""Evaluate an adapter on the IMDb test split, or any labelled file, through the app's own Predictor.

    python evaluation/evaluate.py --data ../shared/data/imdb --limit 2000
    python evaluation/evaluate.py --model trained_model --data reviews.csv

Writes a JSON report (accuracy, precision, recall, F1, ROC-AUC, log loss, expected calibration error,
confusion matrix) and PNG plots (confusion matrix, ROC curve, reliability diagram) under
results/evaluation/. The metrics are those of the served probabilities, temperature-scaled by the
adapter's calibration.json; calibration error and log loss are also reported before scaling (T = 1),
and the reliability diagram shows both. Every metrics block says how its probabilities were made: the
`temperature` applied and the `numeric_precision` the model ran in. `--record` also stores the test metrics,
with the command, date and machine, in the adapter's metrics.json (which the app shows) and rewrites its card.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from inference import options
from inference.predictor import Predictor
from training import failures, model_card, storage
from training.data import label_ids, load_split, stratified_subset
from training.errors import DataError, ModelLoadError
from training.metrics import classification_metrics, reliability_bins, softmax
from training.model import METRICS_FILE, SentimentConfig, check_adapter_folder, read_metrics
from training.paths import RESULTS_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser)
    options.add_labelled_data(parser)
    parser.add_argument(
        "--limit", type=int, default=None, help="Evaluate a stratified, seeded subset of this many reviews."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed for --limit's subset.")
    options.add_batch_size(parser, default=64)
    options.add_device(parser)
    options.add_precision(parser)
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR / "evaluation", help="Where the JSON report and plots go."
    )
    options.add_trust_pickle_weights(parser)
    parser.add_argument(
        "--record",
        action="store_true",
        help="Also store these metrics as the adapter's test metrics (in its metrics.json), and rewrite its card.",
    )
    args = parser.parse_args(argv)
    # What was run, word for word, for the report and the record (the console script runs the same file).
    args.command = shlex.join(["python", "evaluation/evaluate.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(args: argparse.Namespace) -> dict:
    """Evaluate; returns the report that is also written to OUTPUT_DIR/report.json."""
    if args.limit is not None and args.limit < 2:
        raise DataError("--limit must be at least 2.")
    frame = load_split(args.data, args.split, args.text_column, args.label_column)
    # The adapter's labels, from its record, so a label it does not know is refused before its weights load.
    check_adapter_folder(args.model, args.trust_pickle_weights)
    label_names = SentimentConfig.load(args.model).labels
    frame["label"] = label_ids(frame["label"], label_names, f"{args.data} ({args.split})")
    blank = frame["text"].str.strip() == ""
    frame = stratified_subset(frame[~blank], args.limit, args.seed)
    predictor = Predictor.from_pretrained(
        args.model, device=args.device, precision=args.precision, trust_pickle=args.trust_pickle_weights
    )

    started = time.perf_counter()
    logits = predictor.predict_logits(frame["text"].tolist(), batch_size=args.batch_size, progress=True)
    seconds = time.perf_counter() - started
    labels = frame["label"].to_numpy()
    probabilities = softmax(logits / predictor.temperature)  # what the Predictor serves
    metrics = {
        **classification_metrics(labels, probabilities, predictor.labels),
        **model_card.scored_with(predictor.temperature, predictor.precision),
    }

    report = {
        "run": {
            "command": args.command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_name(predictor.device_name),
        },
        "metrics": metrics,
        "data": {
            "source": str(args.data),
            "split": args.split,
            "text_column": args.text_column,
            "label_column": args.label_column,
            "limit": args.limit,
            "seed": args.seed,
            "num_examples": len(frame),
            "skipped_empty": int(blank.sum()),
        },
        "model": {key: value for key, value in predictor.info().items() if key != "metrics"},
        "speed": {
            "seconds": round(seconds, 2),
            "reviews_per_second": round(len(frame) / seconds, 1),
            "batch_size": args.batch_size,
            "device": predictor.device_name,
        },
        "reliability_bins": reliability_bins(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels),
        "calibration": calibration_before_after(labels, logits, predictor.temperature),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(
        labels, probabilities, metrics, report["calibration"], predictor.labels, args.output_dir
    )
    storage.write_json(args.output_dir / "report.json", report)
    if args.record:
        uncalibrated = report["calibration"]["uncalibrated"]
        test = {
            **metrics,
            "uncalibrated": {
                key: uncalibrated[key] for key in ("temperature", "expected_calibration_error", "log_loss")
            },
            "data": report["data"],
            "run": report["run"],
        }
        report["model_card"] = record_test_metrics(args.model, test, report["plots"])
    return report


def machine_name(device_name: str) -> str:
    """What the figures were measured on: the GPU's name, or the CPU's model and how many cores it has."""
    if device_name != "CPU":
        return device_name
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:  # not Linux
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    return f"CPU: {model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def record_test_metrics(model_dir: Path, test: dict, plots: dict[str, str] | None = None) -> bool:
    """Keep the adapter's test figures beside its validation figures, where the app and tests read them, and
    rewrite its model card with them and the plots (copied into the folder's evaluation/) when the card was
    written by the code (a hand-written card is left alone). Returns whether the card was rewritten."""
    recorded = read_metrics(model_dir)
    recorded["test"] = test
    storage.write_json(Path(model_dir) / METRICS_FILE, recorded)  # atomic: the app reads it on every rerun
    if not model_card.is_generated(model_dir):
        return False
    shown = {}
    for name, path in (plots or {}).items():
        target = Path(model_dir) / "evaluation" / Path(path).name
        target.parent.mkdir(exist_ok=True)
        storage.write_bytes(target, Path(path).read_bytes())
        shown[name.replace("_", " ")] = f"evaluation/{target.name}"
    return model_card.write_model_card(model_dir, shown)


def calibration_before_after(labels, logits, temperature: float) -> dict:
    """Calibration error, log loss and reliability bins of the raw (T = 1) and the served probabilities.

    Both come from the same logits; one scalar temperature leaves every predicted label, hence accuracy,
    F1 and ROC-AUC, unchanged.
    """
    result = {"temperature": temperature}
    for name, scaled_by in (("uncalibrated", 1.0), ("calibrated", temperature)):
        probabilities = softmax(logits / scaled_by)
        metrics = classification_metrics(labels, probabilities)
        result[name] = {
            "temperature": scaled_by,
            **{key: metrics[key] for key in ("expected_calibration_error", "log_loss", "accuracy")},
            "reliability_bins": reliability_bins(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels),
        }
    return result


def write_plots(labels, probabilities, metrics, calibration, label_names, folder: Path) -> dict:
    """Confusion matrix, ROC curve and reliability diagram as PNG files; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    paths = {name: folder / f"{name}.png" for name in ("confusion_matrix", "roc_curve", "reliability_diagram")}

    ticks = list(range(len(label_names)))
    side = 4.5 + 0.4 * max(len(label_names) - 2, 0)
    figure, axis = plt.subplots(figsize=(side, side - 0.5))
    matrix = np.array(metrics["confusion_matrix"])
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(
            column,
            row,
            f"{count}",
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
            fontsize=12,
        )
    axis.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=label_names,
        yticklabels=label_names,
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix (accuracy {metrics['accuracy']:.2%})",
    )
    figure.tight_layout()
    save_figure(figure, paths["confusion_matrix"])
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(4.5, 4))
    if len(label_names) == 2 and metrics["roc_auc"] is not None:
        false_positive, true_positive, _ = roc_curve(labels, probabilities[:, 1])
        axis.plot(false_positive, true_positive, label=f"ROC-AUC {metrics['roc_auc']:.4f}")
    elif len(label_names) > 2:  # one curve per label against the rest
        for index, name in enumerate(label_names):
            if 0 < (labels == index).sum() < len(labels):
                false_positive, true_positive, _ = roc_curve(labels == index, probabilities[:, index])
                axis.plot(false_positive, true_positive, label=f"{name} vs rest")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    title = "ROC curve" if len(label_names) == 2 else "ROC curves, one-vs-rest"
    if len(label_names) > 2 and metrics["roc_auc"] is not None:
        title += f" (macro AUC {metrics['roc_auc']:.4f})"
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    save_figure(figure, paths["roc_curve"])
    plt.close(figure)

    plot_reliability(calibration, paths["reliability_diagram"], len(label_names))
    return {name: str(path) for name, path in paths.items()}


def plot_reliability(calibration: dict, path: Path, num_labels: int = 2) -> None:
    """Reliability diagram before and after temperature scaling: two panels with the same axes.

    The top label's confidence is never below 1 / num_labels, where the x axis starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for axis, name in zip(axes, ("uncalibrated", "calibrated")):
        side = calibration[name]
        filled = [b for b in side["reliability_bins"] if b["count"]]
        centres = [(b["lower"] + b["upper"]) / 2 for b in filled]
        axis.bar(
            centres,
            [b["accuracy"] for b in filled],
            width=[b["upper"] - b["lower"] for b in filled],
            edgecolor="black",
            alpha=0.7,
            label="accuracy in bin",
        )
        axis.plot(
            [b["confidence"] for b in filled],
            [b["accuracy"] for b in filled],
            marker="o",
            color="black",
            label="accuracy vs mean confidence",
        )
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        for centre, b in zip(centres, filled):  # how many reviews each bar stands for, at its foot
            axis.text(centre, 0.02, str(b["count"]), ha="center", va="bottom", fontsize=7, rotation=90)
        axis.set(
            xlim=(max(1 / num_labels - 0.05, 0.0), 1.0),
            ylim=(0, 1),
            xlabel="confidence",
            title=f"{name} (T = {side['temperature']:.3f}): ECE {side['expected_calibration_error']:.4f}",
        )
    axes[0].legend(loc="upper left", fontsize=7, framealpha=0.9)
    axes[0].set_ylabel("accuracy")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def save_figure(figure, path: Path) -> None:
    """A PNG written atomically (rendered in memory, then storage.write_bytes)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    storage.write_bytes(path, buffer.getvalue())


def cli(argv: list[str] | None = None) -> int:
    try:
        report = main(parse_args(argv))
    except (DataError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics, calibration = report["metrics"], report["calibration"]
    # ROC-AUC is undefined (None) when the data holds one label only.
    roc_auc = "undefined (one label only)" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.4f}"
    averaged = "" if len(metrics["labels"]) == 2 else "macro "  # with more labels: macro averages, one-vs-rest AUC
    print(
        f"{report['data']['num_examples']} reviews: accuracy {metrics['accuracy']:.4f}, {averaged}precision "
        f"{metrics['precision']:.4f}, {averaged}recall {metrics['recall']:.4f}, {averaged}F1 {metrics['f1']:.4f}, "
        f"{averaged}ROC-AUC {roc_auc}, "
        f"ECE {calibration['uncalibrated']['expected_calibration_error']:.4f} -> {metrics['expected_calibration_error']:.4f} "
        f"and log loss {calibration['uncalibrated']['log_loss']:.4f} -> {metrics['log_loss']:.4f} with temperature "
        f"{calibration['temperature']:.3f} ({report['speed']['reviews_per_second']} reviews/s on "
        f"{report['speed']['device']}). Report: {Path(report['plots']['confusion_matrix']).parent / 'report.json'}"
    )
    return 0


def run(argv: list[str] | None = None) -> int:
    """The command's entry point (console script and `python evaluation/evaluate.py`): cli(), with anything unexpected turned
    into one line and a log file holding the traceback (training/failures.py)."""
    return failures.guard("evaluate", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
