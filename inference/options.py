"""Command-line options shared by the commands that load an adapter: each one written once, here.

inference/predict.py, evaluation/evaluate.py, evaluation/calibrate.py and evaluation/long_reviews.py
build their parsers from these helpers, so `--model`, `--device`, `--batch-size` and the rest mean the
same thing, with the same checks and help, everywhere. training/train.py generates its own options
from `TrainConfig`'s fields. This module imports no command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.predictor import PRECISIONS
from training.paths import DEFAULT_MODEL_DIR


def positive_int(value: str) -> int:
    """argparse type for counts such as --batch-size: a whole number of at least 1."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not '{value}'")
    return int(value)


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, help="Adapter folder (default: the shipped trained_model/)."
    )


def add_labelled_data(parser: argparse.ArgumentParser) -> None:
    """--data and --split: the labelled reviews a command measures the adapter on."""
    parser.add_argument(
        "--data",
        default="hub",
        help="'hub' (stanfordnlp/imdb), a folder with test.parquet, or a labelled parquet/CSV/JSONL file. "
        "Offline: --data ../shared/data/imdb",
    )
    parser.add_argument(
        "--split", default="test", help="Split to read from a folder or the hub (default: %(default)s)."
    )
    add_text_column(parser, "--data")
    parser.add_argument(
        "--label-column",
        default="label",
        help="Column of --data holding the labels: the adapter's label names, or whole numbers (0 is its first "
        "label, unless its labels are numbers themselves). Default: %(default)s",
    )


def add_text_column(parser: argparse.ArgumentParser, where: str) -> None:
    parser.add_argument(
        "--text-column", default="text", help=f"Column of {where} holding the reviews (default: %(default)s)."
    )


def add_training_data(parser: argparse.ArgumentParser) -> None:
    """--data for a command that rebuilds the split an adapter was trained and selected on."""
    parser.add_argument(
        "--data",
        default=None,
        help="The training data the adapter was trained on, if it has moved since (default: the path "
        "recorded in its sentiment_config.json). Offline: --data ../shared/data/imdb",
    )


def add_batch_size(parser: argparse.ArgumentParser, default: int, what: str = "Reviews") -> None:
    parser.add_argument("--batch-size", type=positive_int, default=default, help=f"{what} per forward pass.")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if there is one).")


def add_precision(parser: argparse.ArgumentParser) -> None:
    # Why int8 is opt-in, with its measured speed and accuracy: docs/speed.md.
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 where the hardware computes it (a GPU, or a CPU with Intel AMX), else exact "
        "fp32. fp32: exact everywhere. int8: dynamic quantization, faster on a CPU but less accurate (see docs/speed.md).",
    )


def add_trust_pickle_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-pickle-weights",
        action="store_true",
        help="Also load an adapter saved as pickle (adapter_model.bin). A pickle can carry code; PyTorch's restricted "
        "loader stops the known ways to run it but has been bypassed before. Use only for a file you made "
        "or fully trust. Default: safetensors only.",
    )


def add_allow_hub_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-hub-base",
        action="store_true",
        help="Let the adapter's sentiment_config.json name a base model on the Hugging Face Hub other than the "
        "packaged one or distilbert-base-uncased, and download it. An adapter folder is someone else's file: "
        "use only for a repository you trust. Default: the packaged base, distilbert-base-uncased or a local folder.",
    )
