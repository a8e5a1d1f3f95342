"""Fit temperature scaling for an existing adapter, on the validation split it was selected on.

    python evaluation/calibrate.py --model trained_model --data ../shared/data/imdb

Adapters trained by training/train.py get calibration.json at the end of training; this script gives
one to an adapter trained before that existed. The validation split is rebuilt exactly as training
carved it (the data, validation fraction, seed and limits recorded in the adapter's
sentiment_config.json), scored through the Predictor in exact fp32 with the truncation the adapter was
trained with, and the fitted temperature is written to the adapter's calibration.json. The test split
is never read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inference import options
from inference.predictor import Predictor
from training import failures
from training.data import load_training_data
from training.errors import DataError, ModelLoadError
from training.metrics import calibration_record
from training.model import CALIBRATION_FILE, SentimentConfig, check_adapter_folder, read_metrics, write_calibration
from training.paths import PROJECT_ROOT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser)
    options.add_training_data(parser)
    options.add_batch_size(parser, default=64)
    options.add_device(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    """Fit and write the temperature; returns the record written to MODEL/calibration.json."""
    check_adapter_folder(args.model)
    split = recorded_split(args.model, args.data)
    validation = load_training_data(
        readable_data(split["data"], given=args.data is not None),
        split["validation_fraction"],
        split["seed"],
        split["train_limit"],
        split["validation_limit"],
        split["text_column"],
        split["label_column"],
        SentimentConfig.load(args.model).labels,  # the ids the adapter was trained on, in its own order
    ).validation
    expected = read_metrics(args.model).get("validation", {}).get("num_examples")
    if expected is not None and expected != len(validation):
        raise DataError(
            f"{split['data']} gives a validation split of {len(validation)} reviews, but the adapter was "
            f"selected on {expected}: this is not the data it was trained on. Pass that data with --data."
        )

    predictor = Predictor.from_pretrained(
        args.model, device=args.device, precision="fp32", calibrated=False, long_reviews="truncate"
    )
    started = time.perf_counter()
    logits = predictor.predict_logits(validation["text"].tolist(), batch_size=args.batch_size, progress=True)
    seconds = time.perf_counter() - started
    labels = validation["label"].to_numpy()

    record = calibration_record(logits, labels)
    record["split"] = {
        "data": str(split["data"]),
        "validation_fraction": split["validation_fraction"],
        "seed": split["seed"],
        "validation_limit": split["validation_limit"],
        "accuracy": float((logits.argmax(axis=1) == labels).mean()),
    }
    record["logits"] = (
        f"fp32 on {predictor.device_name}, {predictor.config.truncation} truncation to {predictor.config.max_length} tokens"
    )
    write_calibration(args.model, record)
    return {**record, "seconds": round(seconds, 1)}


def recorded_split(model_dir: Path, data: str | None) -> dict:
    """The settings recorded with an adapter that define its validation split (only `data` may be overridden)."""
    recorded = SentimentConfig.load(model_dir).training
    missing = [key for key in ("data", "validation_fraction", "seed") if key not in recorded]
    if missing:
        raise ModelLoadError(
            f"{model_dir}'s sentiment_config.json has no training record of {', '.join(missing)}, so the validation "
            f"split it was selected on cannot be rebuilt. Retrain it with training/train.py, which calibrates it."
        )
    return {
        "data": data if data is not None else recorded["data"],
        "validation_fraction": recorded["validation_fraction"],
        "seed": recorded["seed"],
        "train_limit": recorded.get("train_limit"),
        "validation_limit": recorded.get("validation_limit"),
        "text_column": recorded.get("text_column", "text"),
        "label_column": recorded.get("label_column", "label"),
    }


def readable_data(data: str, given: bool) -> str:
    """train.py records local data relative to the project root; --data on this command line is relative to here."""
    if not given and not Path(data).is_absolute() and (PROJECT_ROOT / data).exists():
        return str(PROJECT_ROOT / data)
    return data


def cli(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        record = main(args)
    except (DataError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Temperature {record['temperature']:.4f} fitted on the {record['fitted_on']} (accuracy {record['split']['accuracy']:.4f}; "
        f"scored in {record['seconds']} s): ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f}, "
        f"NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}. Written to {args.model / CALIBRATION_FILE}"
    )
    return 0


def run(argv: list[str] | None = None) -> int:
    """The command's entry point (console script and `python evaluation/calibrate.py`): cli(), with anything unexpected turned
    into one line and a log file holding the traceback (training/failures.py)."""
    return failures.guard("calibrate", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
