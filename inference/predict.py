"""Predict the sentiment of movie reviews with a trained LoRA adapter.

    python inference/predict.py "A wonderful film." "Two hours I will never get back."
    cat reviews.txt | python inference/predict.py
    python inference/predict.py --file reviews.csv --output predictions.csv

The command line over `Predictor` (inference/predictor.py), the one inference path: the CLI, the
Streamlit app and evaluation/evaluate.py all use it, so the figures evaluation reports are the ones
users get.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from inference import options
from inference.onnx_backend import is_export
from inference.predictor import LONG_REVIEW_MODES, Predictor
from inference.tables import attach_predictions, predict_table, probability_column
from training import failures, storage
from training.errors import DataError, ModelLoadError
from training.readers import NO_LIMITS, ReadLimits, read_table, split_lines, spreadsheet_safe
from training.text import EmptyTextError, TextError, is_unicode_text

OUTPUT_SUFFIXES = (".csv", ".jsonl")


def read_stdin() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"Standard input is not UTF-8 text ({error}); re-encode it, e.g. iconv -f latin1 -t utf-8."
        ) from error


def check_output(output: Path, source: Path | None) -> None:
    """Refuse an --output that is a symbolic link or the --file being read, before anything is read or written.

    A link: the predictions would replace the link (os.replace does not follow it), not land where it points,
    and a file this command creates is never written through a link. The input: it would be replaced by its
    own rows with predictions, which cut long reviews and add columns; the original would be gone."""
    if output.is_symlink():
        raise DataError(
            f"--output {output} is a symbolic link; give the path of a regular file (links are not written through)."
        )
    if source is not None and output.exists() and source.exists() and os.path.samefile(output, source):
        raise DataError(
            f"--output {output} is the --file being read; write the predictions to a new file, "
            f"e.g. --output {output.with_name(output.stem + '_predictions' + output.suffix)}."
        )


def write_predictions(frame, path: Path) -> None:
    """--output, written atomically. CSV cells that a spreadsheet would run as a formula are quoted
    (spreadsheet_safe); JSON lines are written as they are. A write that fails is one DataError line."""
    try:
        with storage.atomic_writer(path) as file:
            if path.suffix.lower() == ".csv":
                spreadsheet_safe(frame).to_csv(file, index=False)
            else:
                frame.to_json(file, orient="records", lines=True, force_ascii=False)
    except OSError as error:
        raise DataError(
            f"Could not write --output {path}: {error.strerror or error}. Choose a folder you can write to."
        ) from error


def probability(value: str) -> float:
    """argparse type for --uncertain-below: a number between 0 and 1."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, not '{value}'")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="Reviews to classify. None: read one review per line from stdin.")
    parser.add_argument(
        "--file", type=Path, help="Reviews to classify: .txt (one a line), .csv, .jsonl or .parquet with a text column."
    )
    options.add_text_column(parser, "--file")
    limits = ReadLimits()
    parser.add_argument(
        "--trust-large-files",
        action="store_true",
        help=f"Read --file whatever its size. Default: at most {limits.max_rows:,} rows, {limits.max_columns:,} columns "
        f"and {limits.max_bytes // 2**20} MB (Parquet: decoded, checked from its pages' headers before decoding), cells cut "
        f"to {limits.max_cell_chars:,} characters; a small Parquet file can decode to gigabytes.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="Write --file's rows with predictions here (.csv or .jsonl). Default: stdout as JSON lines.",
    )
    options.add_model(parser)
    options.add_batch_size(parser, default=32)
    options.add_device(parser)
    options.add_precision(parser)
    parser.add_argument(
        "--long-reviews",
        choices=LONG_REVIEW_MODES,
        default="truncate",
        help="truncate (default): the head and tail the adapter was trained on; sliding: average overlapping windows over the whole review.",
    )
    options.add_trust_pickle_weights(parser)
    options.add_allow_hub_base(parser)
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="Report raw softmax probabilities instead of temperature-scaled ones.",
    )
    parser.add_argument(
        "--uncertain-below",
        type=probability,
        default=None,
        help="Add a verdict: the top label, or UNCERTAIN when its (calibrated) probability is below this, e.g. 0.75. "
        "With N labels the top probability is at least 1/N. Default: no verdict, the top label alone.",
    )
    parser.add_argument("--json", action="store_true", help="Print JSON lines instead of a table.")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="Also say why: the words that pushed each review towards each label, with scores (Integrated Gradients; seconds per review on a CPU). With --json, every word and its offsets.",
    )
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> list[dict]:
    """Run the CLI; returns the result rows (also printed or written)."""
    import pandas as pd

    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"--output must end in {' or '.join(OUTPUT_SUFFIXES)}, not '{args.output.suffix}'.")
    if args.output is not None:
        check_output(args.output, args.file)
    if args.explain and args.output is not None:
        raise DataError("--explain prints its results: drop --output (add --json for one JSON object per review).")
    if args.file is not None:
        limits = NO_LIMITS if getattr(args, "trust_large_files", False) else ReadLimits()
        frame = read_table(args.file, text_column=args.text_column, limits=limits)
        texts = frame[args.text_column].tolist()
    else:
        texts = args.texts or [line for line in split_lines(read_stdin()) if line.strip()]
        if not texts or not any(text.strip() for text in texts):
            raise EmptyTextError("No review given: pass text as arguments, on stdin, or with --file.")
        for index, text in enumerate(texts):
            if not is_unicode_text(text):
                raise TextError(f"Review {index + 1} on the command line is not UTF-8 text; pass it as UTF-8.")
        frame = pd.DataFrame({"text": texts})
    if args.explain and is_export(args.model):  # explanations take gradients: PyTorch only
        raise DataError("--explain needs the adapter folder (PyTorch), not an ONNX export: use --model trained_model.")
    # An ONNX export (inference/export.py) is served by onnxruntime, an adapter folder by PyTorch.
    predictor = Predictor.from_pretrained(
        args.model,
        device=args.device,
        precision=args.precision,
        calibrated=not args.no_calibration,
        long_reviews=args.long_reviews,
        trust_pickle=args.trust_pickle_weights,
        allow_hub_base=args.allow_hub_base,
    )
    print(
        f"Model: {predictor.config.base_model} + {args.model} on {predictor.device_name} ({predictor.precision})",
        file=sys.stderr,
    )
    if args.explain:
        from inference.explain import print_explanations  # captum loads only when explaining

        return print_explanations(predictor, texts, as_json=args.json)
    uncertain_below = getattr(args, "uncertain_below", None)
    rows = predict_table(predictor, texts, args.batch_size, args.file is not None, uncertain_below)
    result = attach_predictions(frame, rows)
    if args.output is not None:
        write_predictions(result, args.output)
        flagged = sum(1 for row in rows if row["error"])
        print(
            f"Wrote {len(rows)} predictions to {args.output}" + (f" ({flagged} empty rows flagged)" if flagged else ""),
            file=sys.stderr,
        )
    elif args.json or args.file is not None:
        for record in result.to_dict(orient="records"):
            print(json.dumps(record, ensure_ascii=False))
    else:
        width = max(8, *(len(label) for label in predictor.labels))
        for text, row in zip(texts, rows):
            shown = text if len(text) <= 70 else text[:67] + "..."
            label = row.get("verdict") or row["predicted_label"]
            verdict = f"{label:<{width}} {row['confidence']:.3f}" if not row["error"] else f"{'-':<{width}} {'-':>5}"
            if len(predictor.labels) > 2 and not row["error"]:  # two labels: the other's is 1 - confidence
                verdict += (
                    "  (" + ", ".join(f"{name} {row[probability_column(name)]:.2f}" for name in predictor.labels) + ")"
                )
            print(f"{verdict}  {shown}")
    return rows


def cli(argv: list[str] | None = None) -> int:
    try:
        main(parse_args(argv))
    except (DataError, ModelLoadError, TextError) as error:  # an ExportError is a ModelLoadError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run(argv: list[str] | None = None) -> int:
    """The command's entry point (console script and `python inference/predict.py`): cli(), with anything unexpected turned
    into one line and a log file holding the traceback (training/failures.py)."""
    return failures.guard("predict", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
