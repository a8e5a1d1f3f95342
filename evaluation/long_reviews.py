"""Reviews longer than the model reads: head+tail truncation against sliding windows, on the same reviews.

    python evaluation/long_reviews.py --data ../shared/data/imdb --limit 1200

Selects the test reviews with more tokens (the adapter's tokenizer, special tokens included) than the
adapter's max length, scores them through the Predictor both ways with one loaded model, and writes
accuracy, F1, calibration error and reviews/s for each mode (the modes take turns, chunk by chunk, so
both run under the same machine load), plus a paired comparison (McNemar's exact
test on the reviews only one mode gets right), to results/long_reviews.json. `--limit` scores a fixed,
stratified sample of the qualifying reviews instead of all of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from inference import options
from inference.options import positive_int
from inference.predictor import LONG_REVIEW_MODES, Predictor
from training import failures, storage
from training.data import label_ids, load_split, stratified_subset
from training.errors import DataError, ModelLoadError
from training.metrics import classification_metrics, softmax
from training.paths import RESULTS_DIR
from training.text import encode_windows

CHUNK = 64  # reviews per turn when the two modes take turns (see score_interleaved)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser)
    options.add_labelled_data(parser)
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="Score a stratified, seeded sample of this many qualifying reviews (default: all of them).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed for --limit's sample.")
    options.add_precision(parser)  # one loaded model, the same for both modes
    options.add_batch_size(parser, default=32, what="Inputs (reviews or windows)")
    options.add_device(parser)
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "long_reviews.json",
        help="Where the JSON report goes (default: results/long_reviews.json).",
    )
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    """Score the long reviews both ways; returns the report also written to --output."""
    frame = load_split(args.data, args.split, args.text_column, args.label_column)
    frame = frame[frame["text"].str.strip() != ""].reset_index(drop=True)
    truncating = Predictor.from_pretrained(
        args.model, device=args.device, precision=args.precision, long_reviews="truncate"
    )
    frame["label"] = label_ids(frame["label"], truncating.labels, f"{args.data} ({args.split})")
    max_length = truncating.config.max_length
    lengths = token_counts(truncating.tokenizer, frame["text"].tolist())
    long_frame = frame[lengths > max_length].assign(tokens=lengths[lengths > max_length]).reset_index(drop=True)
    if long_frame["label"].nunique() < 2 or long_frame["label"].value_counts().min() < 2:
        raise DataError(f"{args.data} has too few reviews of each label longer than {max_length} tokens to compare.")
    scored = stratified_subset(long_frame, args.limit, args.seed)
    texts, labels = scored["text"].tolist(), scored["label"].to_numpy()

    # Both modes share one loaded (and, for int8, one quantized) model: only the inputs differ.
    predictors = {mode: truncating.with_long_reviews(mode) for mode in LONG_REVIEW_MODES}
    modes = score_interleaved(predictors, texts, args.batch_size)
    windows = len(encode_windows(truncating.tokenizer, texts, max_length)[0])

    report = {
        "data": {
            "source": str(args.data),
            "split": args.split,
            "reviews": len(frame),
            "longer_than_max_length": len(long_frame),
            "max_length": max_length,
            "scored": len(scored),
            "sample": None if args.limit is None else {"limit": args.limit, "seed": args.seed, "stratified": True},
            "tokens_of_scored": describe(scored["tokens"].to_numpy()),
        },
        "model": {key: value for key, value in truncating.info().items() if key != "metrics"},
        "batch_size": args.batch_size,
        "windows_per_review": round(windows / len(scored), 2),
    }
    for mode, result in modes.items():
        metrics = classification_metrics(labels, softmax(result["logits"] / truncating.temperature), truncating.labels)
        report[mode] = {
            **{
                key: metrics[key]
                for key in ("accuracy", "f1", "precision", "recall", "roc_auc", "expected_calibration_error")
            },
            "seconds": round(result["seconds"], 1),
            "cpu_seconds": round(result["cpu_seconds"], 1),
            "reviews_per_second": round(len(scored) / result["seconds"], 2),
        }
    report["paired"] = paired_comparison(labels, modes["truncate"]["logits"], modes["sliding"]["logits"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(args.output, report)
    return report


def score_interleaved(predictors: dict, texts: list[str], batch_size: int, chunk: int = CHUNK) -> dict:
    """Logits and time per mode, the modes taking turns chunk by chunk (alternating which goes first).

    On a shared machine the load changes over minutes; taking turns exposes both modes to the same load,
    so their speeds compare fairly. CPU seconds (this process, all threads) are reported beside wall time.
    """
    from tqdm.auto import tqdm

    results = {mode: {"logits": [], "seconds": 0.0, "cpu_seconds": 0.0} for mode in predictors}
    for number, start in enumerate(tqdm(range(0, len(texts), chunk), desc="Scoring both ways", unit="chunk")):
        for mode in list(predictors)[:: 1 if number % 2 == 0 else -1]:
            wall, cpu = time.perf_counter(), time.process_time()
            results[mode]["logits"].append(predictors[mode].predict_logits(texts[start : start + chunk], batch_size))
            results[mode]["seconds"] += time.perf_counter() - wall
            results[mode]["cpu_seconds"] += time.process_time() - cpu
    return {mode: {**result, "logits": np.concatenate(result["logits"])} for mode, result in results.items()}


def token_counts(tokenizer, texts: list[str]) -> np.ndarray:
    """Tokens per text as the model would see it untruncated, special tokens included."""
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])


def describe(values: np.ndarray) -> dict:
    return {"median": int(np.median(values)), "p90": int(np.percentile(values, 90)), "max": int(values.max())}


def paired_comparison(labels: np.ndarray, truncate_logits: np.ndarray, sliding_logits: np.ndarray) -> dict:
    """Which reviews each mode gets right, and McNemar's exact p-value for the difference (two-sided)."""
    from scipy.stats import binomtest

    truncate_right = truncate_logits.argmax(axis=1) == labels
    sliding_right = sliding_logits.argmax(axis=1) == labels
    only_truncate = int((truncate_right & ~sliding_right).sum())
    only_sliding = int((sliding_right & ~truncate_right).sum())
    discordant = only_truncate + only_sliding
    return {
        "both_right": int((truncate_right & sliding_right).sum()),
        "both_wrong": int((~truncate_right & ~sliding_right).sum()),
        "only_truncate_right": only_truncate,
        "only_sliding_right": only_sliding,
        "accuracy_difference_sliding_minus_truncate": float(sliding_right.mean() - truncate_right.mean()),
        "mcnemar_exact_p": float(binomtest(only_sliding, discordant, 0.5).pvalue) if discordant else 1.0,
    }


def cli(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        report = main(args)
    except (DataError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    data = report["data"]
    print(
        f"{data['longer_than_max_length']} of {data['reviews']} reviews exceed {data['max_length']} tokens; "
        f"scored {data['scored']} with {report['model']['precision']} on {report['model']['device']}:"
    )
    for mode in LONG_REVIEW_MODES:
        result = report[mode]
        print(
            f"  {mode:<8} accuracy {result['accuracy']:.4f}, F1 {result['f1']:.4f}, "
            f"ECE {result['expected_calibration_error']:.4f}, {result['reviews_per_second']} reviews/s"
        )
    paired = report["paired"]
    print(
        f"  only truncation right on {paired['only_truncate_right']}, only sliding right on "
        f"{paired['only_sliding_right']} (McNemar exact p = {paired['mcnemar_exact_p']:.3g}). Report: {args.output}"
    )
    return 0


def run(argv: list[str] | None = None) -> int:
    """The command's entry point (console script and `python evaluation/long_reviews.py`): cli(), with anything unexpected turned
    into one line and a log file holding the traceback (training/failures.py)."""
    return failures.guard("long_reviews", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
