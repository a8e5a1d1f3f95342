"""Train several LoRA recipes one after another and compare them on the validation split.

    python scripts/sweep.py --base-model minilm --data ../shared/data/imdb --out results/sweep

Each recipe is a full `training/train.py` run (same code, same split, same seed); its adapter goes to
OUT/<name>/ and its validation metrics to OUT/sweep.json. The test split is never read: choose the
recipe on validation, then evaluate the chosen adapter once with evaluation/evaluate.py.
A time budget stops the sweep from starting a recipe it could not finish (for a lent GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tarfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.train import TrainConfig, main as train

# Ordered by priority: the recipe we expect to ship first, then one lever changed at a time.
RECIPES = {
    "all-linear_r16_len512": {},
    "all-linear_r32_len512_6ep": {"lora_rank": 32, "lora_alpha": 64, "epochs": 6, "learning_rate": 4e-4},
    "all-linear_r16_len256": {"max_length": 256},
    "attention_r16_len512": {"lora_targets": "attention"},
    "head-truncation_r16_len512": {"truncation": "head"},
}
BASE_RECIPE = {"max_length": 512, "truncation": "head_tail", "lora_rank": 16, "lora_alpha": 32,
               "lora_targets": "all-linear", "learning_rate": 5e-4, "epochs": 4, "batch_size": 32}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="minilm", help="Base encoder (see training/train.py).")
    parser.add_argument("--data", required=True, help="Training data (see training/train.py).")
    parser.add_argument("--out", default="results/sweep", help="Folder for the adapters and sweep.json.")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), help="Which recipes, in order.")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="Start no recipe after this many seconds.")
    parser.add_argument("--tar", default=None, help="Also pack the adapters into this .tar after each recipe.")
    parser.add_argument("--override", default="{}", help="JSON of TrainConfig fields applied to every recipe (tiny smoke runs).")
    return parser.parse_args(argv)


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, report = time.time(), {}
    for name in args.recipes:
        if time.time() - started > args.budget_s:
            report[name] = {"skipped": "time budget spent"}
            continue
        settings = {**BASE_RECIPE, **RECIPES[name], **json.loads(args.override)}
        config = TrainConfig(base_model=args.base_model, data=args.data, output_dir=str(out / name),
                             results_dir=str(out / "checkpoints" / name), **settings)
        print(f"=== {name}: {settings}", flush=True)
        try:
            summary = train(config)
            report[name] = {"settings": settings, **summary}
        except Exception as error:  # one failed recipe must not lose the others' results
            traceback.print_exc()
            report[name] = {"settings": settings, "error": f"{type(error).__name__}: {error}"}
        report[name]["elapsed_s"] = round(time.time() - started, 1)
        (out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
        if args.tar:
            with tarfile.open(args.tar, "w") as archive:
                archive.add(out / "sweep.json", arcname="sweep.json")
                for recipe in report:
                    if (out / recipe).is_dir():
                        archive.add(out / recipe, arcname=recipe)
        print(json.dumps({name: report[name].get("validation", report[name].get("error"))}, indent=1), flush=True)
    return report


if __name__ == "__main__":
    main(parse_args())
