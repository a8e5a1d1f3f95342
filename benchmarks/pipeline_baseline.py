"""The plain Hugging Face way to score a file of reviews: the baseline benchmarks/benchmark.py measures against.

    python benchmarks/pipeline_baseline.py --file reviews.csv --output predictions.csv

What a notebook user writes: load the base model, attach the LoRA adapter with PEFT (not merged),
hand both to `transformers.pipeline("text-classification")` and call it on the texts, truncating
to the adapter's max length. No quantization, no length sorting; `--batch-size` is left at the
pipeline's own default of 1, which the Hugging Face docs recommend on the CPU (batching there pads
every batch to its longest review and is usually slower). The only project code used finds the
base model's weights offline (the packaged all-MiniLM-L6-v2 instead of a hub download).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.paths import DEFAULT_MODEL_DIR

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def load_pipeline(adapter_dir: str | Path, device: str = "cpu", batch_size: int = 1):
    """transformers.pipeline over the base model with the adapter attached, as a tutorial does it."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from training.base import resolve_base_source

    adapter_dir = Path(adapter_dir)
    base_id = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_base_source(base_id), num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
    )
    model = PeftModel.from_pretrained(base, adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    max_length = json.loads((adapter_dir / "sentiment_config.json").read_text())["max_length"]
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device, batch_size=batch_size)
    return lambda texts: classify(texts, truncation=True, max_length=max_length)


def pipeline_positive_probability(results: list[dict]) -> list[float]:
    """P(positive) from the pipeline's results, each the top label and its score."""
    return [result["score"] if result["label"] == "POSITIVE" else 1 - result["score"] for result in results]


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, required=True, help="CSV with a text column.")
    parser.add_argument(
        "--output", type=Path, required=True, help="CSV to write, with predicted_label and score added."
    )
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, help="Adapter folder (default: the shipped one)."
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="Reviews per forward pass (default: the pipeline's own, 1)."
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / a GPU index.")
    args = parser.parse_args(argv)

    frame = pd.read_csv(args.file, keep_default_na=False)
    classify = load_pipeline(args.model, args.device, args.batch_size)
    results = classify(frame["text"].astype(str).tolist())
    frame["predicted_label"] = [result["label"] for result in results]
    frame["score"] = [result["score"] for result in results]
    frame.to_csv(args.output, index=False)
    print(f"Wrote {len(frame)} predictions to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
