"""sentiment-bulk (Ray Data, two workers) against `inference/predict.py --file` on the same N reviews, on this machine:
identical outputs, and the throughput of each. Writes a JSON record.

    python scripts/bulk_compare.py --reviews 200 --output results/bulk_compare.json

Both run as their commands do (a fresh process each, fp32 so the outputs compare exactly, the same model) on one
CSV of N IMDb training reviews (fixed seed). "Identical" means the same columns in the same order, the same text,
labels and error flags row for row, and probabilities within 1e-5 (both write 6 decimals; batches composed
differently change the last bits of a logit). Throughput is reviews per second of the whole command (start-up
and model loading included) and, for sentiment-bulk, also of its scoring alone (its summary's `seconds`, after
Ray has started). This is the evidence for replacing inference/distributed.py (accelerate launch) with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from training import storage
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT, RESULTS_DIR

PROBABILITY_TOLERANCE = 1e-5
MAX_REVIEWS = 25_000  # the training split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=200, help=f"N: reviews to score (at most {MAX_REVIEWS:,}).")
    parser.add_argument("--workers", type=int, default=2, help="sentiment-bulk's workers (default: %(default)s).")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="Adapter folder (default: the shipped).")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMDB_DATA_DIR", "../shared/data/imdb")))
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds each command may take.")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "bulk_compare.json", help="The JSON record.")
    args = parser.parse_args(argv)
    if not 1 <= args.reviews <= MAX_REVIEWS or args.workers < 1:
        parser.error(f"--reviews must be between 1 and {MAX_REVIEWS:,}, --workers at least 1")
    return args


def timed(command: list[str], timeout: float) -> tuple[float, str]:
    """Run a command from the project root; its wall-clock seconds and stdout. Fails loudly with its stderr."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def differences(expected: pd.DataFrame, got: pd.DataFrame) -> dict:
    """How far sentiment-bulk's rows are from predict.py's: column order, text/label/error mismatches, and the
    largest probability difference."""
    found = {"same_columns": list(expected.columns) == list(got.columns), "rows": [len(expected), len(got)]}
    if not found["same_columns"] or len(expected) != len(got):
        return {**found, "identical": False, "columns": [list(expected.columns), list(got.columns)]}
    for column in ("text", "predicted_label", "error"):
        found[f"{column}_mismatches"] = int((got[column].fillna("") != expected[column].fillna("")).sum())
    numbers = [column for column in expected.columns if column == "confidence" or column.startswith("p_")]
    gaps = [(got[c] - pd.to_numeric(expected[c], errors="coerce")).abs().max() for c in numbers]
    found["max_probability_difference"] = float(max(gap for gap in gaps if gap == gap) if gaps else 0.0)
    found["identical"] = (
        all(found[f"{column}_mismatches"] == 0 for column in ("text", "predicted_label", "error"))
        and found["max_probability_difference"] <= PROBABILITY_TOLERANCE
    )
    return found


def main(args: argparse.Namespace) -> dict:
    reviews = pd.read_parquet(args.data / "train.parquet", columns=["text", "label"])
    reviews = reviews.sample(args.reviews, random_state=0).reset_index(drop=True)
    with tempfile.TemporaryDirectory(prefix="bulk_compare_") as work:
        # The reference as JSON lines: a CSV output quotes cells that start with =, +, - or @ against spreadsheet
        # formulas (training.readers.spreadsheet_safe), and Parquet has no such cells to guard.
        source, reference, scored = Path(work) / "reviews.csv", Path(work) / "predict.jsonl", Path(work) / "scored"
        reviews.to_csv(source, index=False)
        model = ["--model", str(args.model.resolve()), "--precision", "fp32"]
        predict_s, _ = timed(
            [sys.executable, "inference/predict.py", "--file", str(source), "--output", str(reference), *model],
            args.timeout,
        )
        bulk_s, stdout = timed(
            [sys.executable, "-m", "serving.bulk", "--data", str(source), "--output", str(scored)]
            + ["--workers", str(args.workers), *model],
            args.timeout,
        )
        summary = json.loads(stdout.strip().splitlines()[-1])
        expected = pd.read_json(reference, lines=True, dtype={"text": str, "predicted_label": str, "error": str})
        found = differences(expected, pd.read_parquet(scored / "reviews.parquet"))
    return {
        "reviews": args.reviews,
        "model": str(args.model),
        "outputs": found,
        "predict_file": {"seconds": round(predict_s, 2), "reviews_per_s": round(args.reviews / predict_s, 2)},
        "sentiment_bulk": {
            "workers": summary["workers"],
            "seconds": round(bulk_s, 2),
            "reviews_per_s": round(args.reviews / bulk_s, 2),
            "scoring_seconds": summary["seconds"],
            "scoring_reviews_per_s": round(args.reviews / summary["seconds"], 2),
        },
        "bulk_over_predict_file": round(predict_s / bulk_s, 3),
    }


if __name__ == "__main__":
    arguments = parse_args()
    from benchmarks.machine import describe_machine

    record = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": describe_machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        **main(arguments),
        "load_average_at_end": list(os.getloadavg()),
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(arguments.output, record)
    print(json.dumps(record, indent=2))
    sys.exit(0 if record["outputs"]["identical"] else 1)
