"""Export a trained adapter as one ONNX model, for serving without PyTorch.

    pip install -r requirements-export.txt
    python inference/export.py --model trained_model --output exported/
    python inference/predict.py --model exported/ "A wonderful film."

Writes to --output:
  model.onnx             the merged model (LoRA folded into the base weights), fp32, inputs input_ids and
                         attention_mask with dynamic batch and sequence axes, output logits
  tokenizer.json         the adapter's tokenizer (the `tokenizers` library reads it)
  sentiment_export.json  the project's record: labels, max length, truncation and its head fraction, temperature,
                         special tokens, base model id, the adapter's metrics, and the parity check run here

inference/onnx_predictor.py serves it with onnxruntime, tokenizers and numpy only. Before the folder is
written, the export is checked against the PyTorch model it came from on a few reviews; a difference in
logits above --tolerance fails the export.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from inference import options
from inference.onnx_predictor import (
    EXPORT_RECORD_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    ExportError,
    ExportRecord,
    OnnxPredictor,
)
from training.model import ModelLoadError, read_calibration, read_metrics

MIN_OPSET = 17
EXPORT_FILES = (ONNX_FILE, TOKENIZER_FILE, EXPORT_RECORD_FILE)
# Reviews the export is checked on before it is written: short, long (truncated), unicode, a padded batch.
CHECK_TEXTS = (
    "Great.",
    "A wonderful, moving film. The acting is superb and I loved every minute of it.",
    "Two hours I will never get back. Dull, predictable and far too long. " * 60,
    "Ce film était magnifique ! Les acteurs sont formidables. 素晴らしい映画でした 🎬👍",
    "Not bad at all, though the ending drags.<br /><br />Worth a look on a rainy evening.",
)


@dataclasses.dataclass
class ExportConfig:
    """What to export and where."""

    model: Path  # adapter folder
    output: Path  # export folder to write
    opset: int = 18
    tolerance: float = 1e-4  # largest |logit difference| to the PyTorch model the export may show
    overwrite: bool = False
    trust_pickle_weights: bool = False


def parse_args(argv: list[str] | None = None) -> ExportConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser)
    parser.add_argument("--output", type=Path, required=True, help="Folder to write the export to.")
    parser.add_argument(
        "--opset",
        type=int,
        default=ExportConfig.opset,
        help=f"ONNX opset (default: %(default)s; at least {MIN_OPSET}).",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=ExportConfig.tolerance,
        help="Fail when the export's logits differ from the PyTorch model's by more (default: %(default)s).",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an earlier export in --output (never other files)."
    )
    options.add_trust_pickle_weights(parser)
    args = parser.parse_args(argv)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be at least {MIN_OPSET}, not {args.opset}.")
    return ExportConfig(**vars(args))


def main(config: ExportConfig) -> dict:
    """Export, check and write the folder; returns the record written (as a dict)."""
    output = Path(config.output)
    check_output_folder(output, config.overwrite)
    check_export_packages()
    import torch

    from training.data import CHARS_PER_TOKEN_BOUND, HEAD_FRACTION, MAX_WINDOWS, special_token_frame
    from training.model import load_classifier

    model, tokenizer, sentiment = load_classifier(
        Path(config.model), device="cpu", merge=True, trust_pickle=config.trust_pickle_weights
    )
    model = model.float().eval()
    prefix, suffix = special_token_frame(tokenizer)
    calibration = read_calibration(Path(config.model))
    record = ExportRecord(
        base_model=sentiment.base_model,
        labels=tuple(sentiment.labels),
        max_length=sentiment.max_length,
        truncation=sentiment.truncation,
        head_fraction=HEAD_FRACTION,
        chars_per_token_bound=CHARS_PER_TOKEN_BOUND,
        max_windows=MAX_WINDOWS,
        prefix_ids=tuple(prefix),
        suffix_ids=tuple(suffix),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        temperature=calibration.get("temperature"),
        onnx={
            "file": ONNX_FILE,
            "opset": config.opset,
            "inputs": ["input_ids", "attention_mask"],
            "outputs": ["logits"],
            "dtype": "float32",
            "dynamic_axes": {"batch": 0, "sequence": 1},
        },
        lora=sentiment.lora,
        metrics=read_metrics(Path(config.model)),
        calibration=calibration,
        exported={
            "from": Path(config.model).name,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "merged": True,
            "torch": torch.__version__,
        },
    )
    with tempfile.TemporaryDirectory(prefix=".export-", dir=output.parent if output.parent.exists() else None) as work:
        staging = Path(work)
        export_onnx(model, staging / ONNX_FILE, config.opset, sentiment.max_length)
        tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
        record.save(staging)
        parity = check_parity(model, tokenizer, sentiment, staging, config.tolerance)
        record = dataclasses.replace(
            record, exported={**record.exported, "versions": versions(), "parity_check": parity}
        )
        record.save(staging)
        output.mkdir(parents=True, exist_ok=True)
        for name in EXPORT_FILES:
            shutil.move(str(staging / name), output / name)
    return dataclasses.asdict(record)


def check_export_packages() -> None:
    """Fail before the model loads when a package the export needs is missing (they are not in the base install)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"The export needs {', '.join(missing)}: pip install -r requirements-export.txt")


def check_output_folder(output: Path, overwrite: bool) -> None:
    """Refuse to write into a folder holding anything but an earlier export, or an earlier export without --overwrite."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file; give a folder.")
    present = sorted(path.name for path in output.iterdir()) if output.is_dir() else []
    others = [name for name in present if name not in EXPORT_FILES]
    if others:
        raise ExportError(
            f"--output {output} holds other files ({', '.join(others[:5])}); give an empty or new folder."
        )
    if present and not overwrite:
        raise ExportError(f"--output {output} already holds an export; pass --overwrite to replace it.")


def logits_only(model):
    """The classifier as a module that takes ids and mask and returns logits alone: the exported graph's signature."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    return LogitsOnly(model).eval()


def export_onnx(model, path: Path, opset: int, max_length: int) -> None:
    """torch.onnx.export (the torch.export-based exporter) with dynamic batch and sequence axes."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max(max_length, model.config.max_position_embeddings))
    # Example inputs: 2 rows of 16 tokens, the second padded, so neither axis is specialised to 1.
    input_ids = torch.full((2, 16), 1000, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": not needed here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals, which a user cannot act on
        torch.onnx.export(
            logits_only(model),
            (input_ids, attention_mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={
                "input_ids": {0: batch, 1: sequence},
                "attention_mask": {0: batch, 1: sequence},
            },
            external_data=False,
            verbose=False,
        )
    import onnx

    onnx.checker.check_model(str(path))


def check_parity(model, tokenizer, sentiment, folder: Path, tolerance: float) -> dict:
    """Logits of the export (through OnnxPredictor, so its tokenization too) against the PyTorch model's."""
    import torch

    from training.data import encode_texts, pad_token_ids

    texts = list(CHECK_TEXTS)
    token_ids = encode_texts(tokenizer, texts, sentiment.max_length, sentiment.truncation)
    batch = pad_token_ids(token_ids, tokenizer.pad_token_id or 0)
    with torch.inference_mode():
        expected = model(**{key: torch.from_numpy(value) for key, value in batch.items()}).logits.double().numpy()
    exported = OnnxPredictor.from_pretrained(folder, calibrated=False).predict_logits(texts, batch_size=2)
    difference = float(np.abs(exported - expected).max())
    if not difference <= tolerance:
        raise ExportError(
            f"The ONNX model's logits differ from the PyTorch model's by {difference:.2e} (more than {tolerance}) "
            f"on {len(texts)} check reviews: the export is wrong; it was not written. Please report it with "
            f"your torch and onnxruntime versions."
        )
    return {
        "reviews": len(texts),
        "max_abs_logit_diff": difference,
        "labels_identical": bool((exported.argmax(1) == expected.argmax(1)).all()),
    }


def versions() -> dict:
    import onnx
    import onnxruntime
    import transformers

    return {"transformers": transformers.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def cli(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        record = main(config)
    except (ModelLoadError, ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parity = record["exported"]["parity_check"]
    print(
        f"Exported {config.model} to {config.output} (ONNX opset {config.opset}, fp32); "
        f"max |logit difference| to PyTorch {parity['max_abs_logit_diff']:.1e} on {parity['reviews']} check reviews.\n"
        f'Serve it: python inference/predict.py --model {config.output} "A wonderful film."'
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
