"""Which faster CPU precision keeps the exact fp32 labels? bf16 and five int8 schemes on the adapter's own
validation reviews (never the test split: this chooses the default).

    python scripts/precision_check.py --model trained_model --data ../shared/data/imdb --reviews 500

Each scheme scores the same reviews with the same batches; one JSON line per scheme: accuracy, labels changed
against fp32, the largest logit change, reviews/s (a rough figure: benchmarks/benchmark.py measures speed).
int8 schemes, all with per-channel int8 weights and the classification head in fp32:
  dynamic             activations quantized per batch on the fly (the Predictor's --precision int8)
  dynamic_ffn_fp32    the same, keeping each layer's feed-forward output projection in fp32 (the layer whose
                      input, after GELU, has the widest range: the usual sensitive one in BERT models)
  static_minmax       activation scales calibrated once on --calibration-reviews training reviews (min/max)
  static_histogram    the same with histogram calibration (clips outliers to minimise quantization error)
  static_histogram_ffn_fp32   static histogram with the feed-forward output projections in fp32
SmoothQuant was measured before (docs/speed.md); it is not repeated here.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from inference.predictor import INT8_KEEP_EXACT, Predictor, quantize_int8
from training.data import load_training_data
from training.model import SentimentConfig

SCHEMES = ("bf16", "dynamic", "dynamic_ffn_fp32", "static_minmax", "static_histogram", "static_histogram_ffn_fp32")


def feed_forward_output(name: str) -> bool:
    """BERT's `layer.N.output.dense` and DistilBERT's `ffn.lin2`: the projection back from the wide GELU layer."""
    return (name.endswith("output.dense") and "attention" not in name) or name.endswith("ffn.lin2")


class _StaticInt8Linear(torch.nn.Module):
    """A Linear between quantize and dequantize stubs, so eager-mode static quantization converts it alone."""

    def __init__(self, linear: torch.nn.Linear):
        from torch.ao.quantization import DeQuantStub, QuantStub

        super().__init__()
        self.quant, self.linear, self.dequant = QuantStub(), linear, DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.linear(self.quant(x)))


def static_int8(model, keep_fp32, observer, calibrate) -> torch.nn.Module:
    """A copy of `model` with every encoder Linear (except `keep_fp32` ones) in static int8, calibrated by
    calling `calibrate(copy)` on training reviews between prepare and convert."""
    from torch.ao.quantization import QConfig, convert, default_per_channel_weight_observer, prepare

    model = copy.deepcopy(model)
    qconfig = QConfig(activation=observer.with_args(reduce_range=False), weight=default_per_channel_weight_observer)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if (
                isinstance(child, torch.nn.Linear)
                and not any(part in full for part in INT8_KEEP_EXACT)
                and not keep_fp32(full)
            ):
                wrapped = _StaticInt8Linear(child)
                wrapped.qconfig = qconfig
                setattr(parent, name, wrapped)
    prepare(model, inplace=True)
    calibrate(model)
    return convert(model, inplace=True)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("trained_model"), help="Adapter folder.")
    parser.add_argument("--data", required=True, help="The IMDb folder the adapter was trained on.")
    parser.add_argument("--reviews", type=int, default=500, help="Validation reviews scored (default: %(default)s).")
    parser.add_argument("--calibration-reviews", type=int, default=64, help="Training reviews for static int8.")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="Comma-separated subset of the schemes.")
    args = parser.parse_args(argv)

    record = SentimentConfig.load(args.model).training
    split = load_training_data(args.data, record["validation_fraction"], record["seed"], record.get("train_limit"))
    validation = split.validation.sample(min(args.reviews, len(split.validation)), random_state=0)
    texts, labels = validation["text"].tolist(), validation["label"].to_numpy()
    calibration_texts = split.train.sample(min(args.calibration_reviews, len(split.train)), random_state=1)
    calibration_texts = calibration_texts["text"].tolist()
    exact = Predictor.from_pretrained(args.model, device="cpu", precision="fp32", calibrated=False)

    def scorer(model) -> Predictor:
        return Predictor(model, exact.tokenizer, exact.config, exact.device, exact.model_dir)

    def calibrate(model) -> None:
        scorer(model).predict_logits(calibration_texts, batch_size=16)

    from torch.ao.quantization import HistogramObserver, MinMaxObserver

    # Full module names: quantize_int8 keeps every Linear whose name contains one of them.
    feed_forward_names = tuple(name for name, _ in exact.model.named_modules() if feed_forward_output(name))

    builders = {
        "bf16": lambda: copy.deepcopy(exact.model).to(torch.bfloat16),
        "dynamic": lambda: quantize_int8(copy.deepcopy(exact.model)),
        "dynamic_ffn_fp32": lambda: quantize_int8(copy.deepcopy(exact.model), INT8_KEEP_EXACT + feed_forward_names),
        "static_minmax": lambda: static_int8(exact.model, lambda name: False, MinMaxObserver, calibrate),
        "static_histogram": lambda: static_int8(exact.model, lambda name: False, HistogramObserver, calibrate),
        "static_histogram_ffn_fp32": lambda: static_int8(
            exact.model, feed_forward_output, HistogramObserver, calibrate
        ),
    }
    chosen = [name.strip() for name in args.schemes.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(builders))
    if unknown:
        parser.error(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")

    def score(model) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        logits = scorer(model).predict_logits(texts, batch_size=32)
        return logits, len(texts) / (time.perf_counter() - started)

    reference, reference_rate = score(exact.model)
    rows = [{"scheme": "fp32", "accuracy": round(float((reference.argmax(1) == labels).mean()), 4),
             "reviews_per_s": round(reference_rate, 1), "reviews": len(texts)}]  # fmt: skip
    print(json.dumps(rows[0]), flush=True)
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore")
        for name in chosen:
            logits, rate = score(builders[name]())
            predicted = logits.argmax(1)
            rows.append(
                {
                    "scheme": name,
                    "accuracy": round(float((predicted == labels).mean()), 4),
                    "labels_changed_vs_fp32": int((predicted != reference.argmax(1)).sum()),
                    "max_abs_logit_change": round(float(np.abs(logits - reference).max()), 4),
                    "reviews_per_s": round(rate, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
