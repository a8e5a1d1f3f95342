"""Does an adapter trained against the bf16-rounded base (as carried to a lent GPU) lose accuracy when served
on the fp32 base that users install?

    python scripts/make_device_carry.py --data ../shared/data/imdb     # writes the bf16 copy it compares against
    python scripts/bf16_base_check.py --model trained_model --data ../shared/data/imdb

Scores each adapter's validation split (rebuilt from its record, as training carved it) twice, in exact fp32
on this machine: on the fp32 packaged base, and on the bf16-rounded copy in .device_carry/minilm. Prints one
JSON line per adapter: accuracy on each base and how many labels differ. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from inference.predictor import Predictor
from training import model as model_module
from training.data import load_training_data
from training.model import SentimentConfig
from training.paths import PROJECT_ROOT

BF16_BASE = PROJECT_ROOT / ".device_carry" / "minilm"


def validation_split(adapter: Path, data: str):
    record = SentimentConfig.load(adapter).training
    validation = load_training_data(
        data, record["validation_fraction"], record["seed"], record.get("train_limit"), record.get("validation_limit")
    ).validation
    return validation["text"].tolist(), validation["label"].to_numpy()


def predicted_labels(adapter: Path, texts: list[str], base_folder: Path | None) -> np.ndarray:
    """Labels in fp32 on the CPU; `base_folder` stands in for the packaged base when given."""
    if base_folder is None:
        predictor = Predictor.from_pretrained(adapter, device="cpu", precision="fp32")
    else:
        with mock.patch.object(model_module, "packaged_model_path", lambda hub_id: base_folder):
            predictor = Predictor.from_pretrained(adapter, device="cpu", precision="fp32")
    return predictor.predict_logits(texts, batch_size=32).argmax(axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, nargs="+", required=True, help="Adapter folders to check.")
    parser.add_argument("--data", required=True, help="The IMDb folder the adapters were trained on.")
    parser.add_argument("--limit", type=int, default=None, help="Score only the first N validation reviews.")
    args = parser.parse_args(argv)
    if not (BF16_BASE / "model.safetensors").exists():
        print(f"error: no bf16 base at {BF16_BASE}; run scripts/make_device_carry.py first.", file=sys.stderr)
        return 2
    for adapter in args.model:
        texts, labels = validation_split(adapter, args.data)
        texts, labels = texts[: args.limit], labels[: args.limit]
        on_fp32 = predicted_labels(adapter, texts, None)
        on_bf16 = predicted_labels(adapter, texts, BF16_BASE)
        print(
            json.dumps(
                {
                    "adapter": str(adapter),
                    "reviews": len(texts),
                    "accuracy_fp32_base": round(float(np.mean(on_fp32 == labels)), 4),
                    "accuracy_bf16_base": round(float(np.mean(on_bf16 == labels)), 4),
                    "labels_differing": int(np.sum(on_fp32 != on_bf16)),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
