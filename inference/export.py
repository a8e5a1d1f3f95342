"""Export a trained adapter as ONNX graphs, for serving without PyTorch.

    pip install -r requirements-export.txt
    python inference/export.py --model trained_model --output exported/
    python inference/predict.py --model exported/ "A wonderful film."

Writes to --output, published in one rename like an adapter (staged beside it, fsynced, then swapped in):
  model.onnx             the merged model (LoRA folded into the base weights), fp32, inputs input_ids and
                         attention_mask with dynamic batch and sequence axes, output logits; exported with eager
                         attention and fused by onnxruntime's transformer optimizer (Attention, SkipLayerNorm,
                         EmbedLayerNorm, BiasGelu), the form onnxruntime runs fastest
  model_int8.onnx        the same graph in dynamic int8 (per-channel weights), leaving in fp32 the matrices the
                         adapter's int8.json names (scripts/precision_check.py measured which move labels)
  tokenizer.json         the adapter's tokenizer (the `tokenizers` library reads it)
  sentiment_export.json  the project's record: labels, max length, truncation and its head fraction, temperature,
                         special tokens, base model id, the adapter's metrics, the int8 scheme and its gate, the
                         fused operators, and the parity check run here

`Predictor.from_pretrained(output)` serves it with onnxruntime, tokenizers and numpy only (inference/onnx_backend.py).
Before the folder is published, the fp32 graph is checked against the PyTorch model it came from on a few
reviews; a difference in logits above --tolerance fails the export. When to serve from it: docs/export.md.
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
from inference.int8 import Int8Scheme, linear_role, read_int8_schemes
from inference.onnx_backend import (
    EXPORT_RECORD_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    TOKENIZER_FILE,
    ExportError,
    ExportRecord,
)
from inference.predictor import Predictor
from training import storage
from training.errors import ModelLoadError
from training.model import read_calibration, read_metrics

MIN_OPSET = 17  # LayerNormalization
EXPORT_FILES = (ONNX_FILE, ONNX_INT8_FILE, TOKENIZER_FILE, EXPORT_RECORD_FILE)
# The operators int8 computes in integers: every MatMul with a weight, and the fused attention's projections.
QUANTIZED_OPS = ("MatMul", "Attention")
# The fused operators onnxruntime's optimizer is expected to make of a BERT-style encoder of n layers.
FUSED_OPERATORS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu")
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
    opset: int = MIN_OPSET
    tolerance: float = 1e-4  # largest |logit difference| to the PyTorch model the fp32 graph may show
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
        help="Fail when the fp32 graph's logits differ from the PyTorch model's by more (default: %(default)s).",
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
    """Export, fuse, quantize, check and publish the folder; returns the record written (as a dict)."""
    output = Path(config.output)
    check_output_folder(output, config.overwrite)
    check_export_packages()
    import torch

    from training.model import load_classifier
    from training.text import CHARS_PER_TOKEN_BOUND, HEAD_FRACTION, MAX_WINDOWS, special_token_frame

    model, tokenizer, sentiment = load_classifier(
        Path(config.model), device="cpu", merge=True, trust_pickle=config.trust_pickle_weights
    )
    model = model.float().eval()
    # Eager attention: SDPA exports as one opaque operator chain the optimizer cannot fuse (docs/export.md).
    model.set_attn_implementation("eager")
    prefix, suffix = special_token_frame(tokenizer)
    calibration = read_calibration(Path(config.model))
    scheme = read_int8_schemes(Path(config.model)).get("onnxruntime") or Int8Scheme("onnxruntime")
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
        int8=scheme.as_dict(),
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
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}{storage.STAGED_MARK}", dir=output.parent))
    try:
        with tempfile.TemporaryDirectory(prefix=".export-raw-", dir=output.parent) as scratch:
            raw = Path(scratch) / "raw.onnx"
            export_onnx(model, raw, config.opset, sentiment.max_length)
            fused = optimize_graph(raw, staged / ONNX_FILE, model.config)
        quantize_graph(staged / ONNX_FILE, staged / ONNX_INT8_FILE, scheme.keep_fp32, scheme.reduce_range)
        tokenizer.backend_tokenizer.save(str(staged / TOKENIZER_FILE))
        record = dataclasses.replace(record, onnx=graph_record(config.opset, model.config, fused))
        record.save(staged)
        parity = check_parity(model, tokenizer, sentiment, staged, config.tolerance)
        record = dataclasses.replace(
            record, exported={**record.exported, "versions": versions(), "parity_check": parity}
        )
        record.save(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    storage.publish_folder(staged, output)  # on failure it keeps the staged folder and says where
    return dataclasses.asdict(record)


def check_export_packages() -> None:
    """Fail before the model loads when a package the export needs is missing (they are not in the base install)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
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
    """torch.onnx.export's TorchScript exporter (dynamo=False), with dynamic batch and sequence axes.

    Not the torch.export-based exporter: its graph of the same eager attention is one onnxruntime's optimizer
    fuses no Attention or EmbedLayerNormalization in (measured with torch 2.13 and onnxruntime 1.32)."""
    import contextlib
    import io
    import warnings

    import torch

    # Example inputs: 2 rows of 16 tokens, the second padded, so neither axis is specialised to 1.
    input_ids = torch.full((2, 16), 1000, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals, which a user cannot act on
        torch.onnx.export(
            logits_only(model),
            (input_ids, attention_mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
        )


def encoder_dimensions(model_config) -> tuple[int, int]:
    """(attention heads, hidden size) of a BERT- or DistilBERT-style config: what the optimizer must be told."""
    heads = getattr(model_config, "num_attention_heads", None) or model_config.n_heads
    hidden = getattr(model_config, "hidden_size", None) or model_config.dim
    return int(heads), int(hidden)


def optimize_graph(source: Path, target: Path, model_config) -> dict[str, int]:
    """onnxruntime's transformer optimizer on the exported graph (model_type "bert", which fuses DistilBERT too),
    saved to `target`; returns how many of each fused operator it made.

    opt_level 0: the optimizer's own fusions only, so the file holds standard and com.microsoft operators and no
    fusions specific to this machine's CPU; onnxruntime applies those when a session loads it."""
    import logging

    from onnxruntime.transformers import optimizer

    heads, hidden = encoder_dimensions(model_config)
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its notes on each fusion it tried
    try:
        optimized = optimizer.optimize_model(
            str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
    finally:
        logger.setLevel(level)
    optimized.save_model_to_file(str(target))
    counts = optimized.get_fused_operator_statistics()
    return {name: int(counts.get(name, 0)) for name in FUSED_OPERATORS}


def graph_record(opset: int, model_config, fused: dict[str, int]) -> dict:
    heads, hidden = encoder_dimensions(model_config)
    return {
        "file": ONNX_FILE,
        "int8_file": ONNX_INT8_FILE,
        "opset": opset,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
        "dtype": "float32",
        "dynamic_axes": {"batch": 0, "sequence": 1},
        "exporter": "torch.onnx TorchScript exporter (dynamo=False), eager attention",
        "optimizer": {"model_type": "bert", "num_heads": heads, "hidden_size": hidden, "opt_level": 0},
        "fused_operators": fused,
    }


def graph_matrix_roles(model) -> dict[str, str]:
    """Every node int8 can quantize in an onnx ModelProto (QUANTIZED_OPS and the head's Gemms), by node name, with
    its role (inference.int8.linear_role). The TorchScript exporter names a node by its module's path
    (`/inner/bert/encoder/layer.0/output/dense/MatMul`); a fused Attention node is the next layer's projections."""
    weights = {initializer.name for initializer in model.graph.initializer}
    roles, layer = {}, -1
    for node in model.graph.node:
        if node.op_type == "Attention":
            layer += 1
            roles[node.name] = f"layer.{layer}.attention.qkv"
        elif node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in weights:
            module = ".".join(node.name.strip("/").split("/")[1:-1])  # drop the wrapper and the operator
            roles[node.name] = linear_role(module)
    return roles


def quantize_graph(
    source: Path, target: Path, keep_fp32: tuple[str, ...], reduce_range: bool = False, only: tuple[str, ...] = ()
) -> list[str]:
    """Dynamic int8 (per-channel int8 weights, uint8 activations quantized per batch) of `source`'s matrices, less
    the roles in `keep_fp32`, written to `target`; `only`: quantize just these roles (the sensitivity scan).
    Returns the quantized nodes' names. The embeddings stay fp32: int8 would save memory there, not time."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    roles = graph_matrix_roles(onnx.load(str(source)))
    chosen = [name for name, role in roles.items() if (role in only if only else role not in keep_fp32)]
    if not chosen:
        shutil.copyfile(source, target)  # nothing to quantize: the fp32 graph itself
        return []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic's "consider pre-processing": not for a fused transformer graph
    try:
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=chosen,
            # The fused operators are com.microsoft's, which shape inference cannot type: their outputs are fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return chosen


def check_parity(model, tokenizer, sentiment, folder: Path, tolerance: float) -> dict:
    """Logits of the export (through the Predictor, so its tokenization too) against the PyTorch model's: the fp32
    graph must agree within `tolerance`; the int8 graph's difference is recorded, not checked."""
    import torch

    from training.text import encode_texts, pad_token_ids

    texts = list(CHECK_TEXTS)
    token_ids = encode_texts(tokenizer, texts, sentiment.max_length, sentiment.truncation)
    batch = pad_token_ids(token_ids, tokenizer.pad_token_id or 0)
    with torch.inference_mode():
        expected = model(**{key: torch.from_numpy(value) for key, value in batch.items()}).logits.double().numpy()
    served = {
        precision: Predictor.from_pretrained(folder, precision=precision, calibrated=False).predict_logits(
            texts, batch_size=2
        )
        for precision in ("fp32", "int8")
    }
    difference = float(np.abs(served["fp32"] - expected).max())
    if not difference <= tolerance:
        raise ExportError(
            f"The ONNX model's logits differ from the PyTorch model's by {difference:.2e} (more than {tolerance}) "
            f"on {len(texts)} check reviews: the export is wrong; it was not written. Please report it with "
            f"your torch and onnxruntime versions."
        )
    return {
        "reviews": len(texts),
        "max_abs_logit_diff": difference,
        "labels_identical": bool((served["fp32"].argmax(1) == expected.argmax(1)).all()),
        "int8_max_abs_logit_diff": float(np.abs(served["int8"] - expected).max()),
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
    except (ModelLoadError, storage.PublishError) as error:  # ExportError is a ModelLoadError
        print(f"error: {error}", file=sys.stderr)
        return 2
    parity, fused = record["exported"]["parity_check"], record["onnx"]["fused_operators"]
    print(
        f"Exported {config.model} to {config.output} (ONNX opset {config.opset}, fp32 and int8; fused "
        f"{', '.join(f'{count} {name}' for name, count in fused.items())}); max |logit difference| to PyTorch "
        f"{parity['max_abs_logit_diff']:.1e} on {parity['reviews']} check reviews.\n"
        f'Serve it: python inference/predict.py --model {config.output} "A wonderful film."'
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
