"""Train several LoRA recipes one after another and compare them on the validation split.

    python scripts/sweep.py --base-model minilm --data ../shared/data/imdb --out results/sweep

Each recipe is a full `training/train.py` run (same code, same split, same seed); its adapter goes to
OUT/<name>/ and its validation metrics to OUT/sweep.json. The test split is never read: choose the
recipe on validation, then evaluate the chosen adapter once with evaluation/evaluate.py.
A time budget stops the sweep from starting a recipe it could not finish (for a lent GPU).
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
import traceback
from pathlib import Path

from training.config import RECIPES_DIR, TrainConfig, load_recipe
from training.train import main as train

# Each sweep recipe is the shipped recipe file (training/recipes/minilm-imdb.json, the sweep's winner)
# with a few settings changed. The sweep's own starting point, from which one lever changes at a time:
SWEEP_BASE = {"lora_rank": 16, "lora_alpha": 32, "learning_rate": 5e-4, "epochs": 4}
# Ordered by priority: the recipe we expected to ship first, then one lever changed at a time.
RECIPES = {
    "all-linear_r16_len512": SWEEP_BASE,
    "all-linear_r32_len512_6ep": {},  # the shipped recipe as it is
    "all-linear_r16_len256": {**SWEEP_BASE, "max_length": 256},
    "attention_r16_len512": {**SWEEP_BASE, "lora_targets": "attention"},
    "head-truncation_r16_len512": {**SWEEP_BASE, "truncation": "head"},
}
SHIPPED_RECIPE = RECIPES_DIR / "minilm-imdb.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="minilm", help="Base encoder (see training/train.py).")
    parser.add_argument("--data", required=True, help="Training data (see training/train.py).")
    parser.add_argument("--out", default="results/sweep", help="Folder for the adapters and sweep.json.")
    parser.add_argument(
        "--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), help="Which recipes, in order."
    )
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="Start no recipe after this many seconds.")
    parser.add_argument("--tar", default=None, help="Also pack the adapters into this .tar after each recipe.")
    parser.add_argument(
        "--override", default="{}", help="JSON of TrainConfig fields applied to every recipe (tiny smoke runs)."
    )
    return parser.parse_args(argv)


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, report = time.time(), {}
    for name in args.recipes:
        if time.time() - started > args.budget_s:
            report[name] = {"skipped": "time budget spent"}
            continue
        settings = {**RECIPES[name], **json.loads(args.override)}
        config = TrainConfig(
            **{
                **load_recipe(SHIPPED_RECIPE),
                **settings,
                "base_model": args.base_model,
                "data": args.data,
                "output_dir": str(out / name),
                "results_dir": str(out / "checkpoints" / name),
            }
        )
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
