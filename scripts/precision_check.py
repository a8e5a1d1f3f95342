"""Which int8 keeps the labels of exact fp32? A sensitivity scan, matrix by matrix, on the adapter's own validation
reviews (never the test split: this chooses the default), for both backends; then the chosen scheme checked
against the gate on every validation review, and the test split read once for the chosen schemes.

    python scripts/precision_check.py --model trained_model --data ../shared/data/imdb \
        --output docs/records/int8_gate.json --record
    python scripts/precision_check.py --model trained_model --data ../shared/data/imdb --schemes bf16,static_histogram

For each backend (PyTorch's dynamic int8, onnxruntime's on the fused export), in steps:
  1. scan      each encoder matrix (a role: layer.N.attention.qkv, .attention.output, .ffn.in, .ffn.out) quantized
               alone, the rest fp32, on --scan-reviews validation reviews: labels changed against fp32, mean KL
               divergence of the probabilities, largest logit change. The head (pooler, classifier) stays fp32.
  2. choose    every matrix in int8, then the most sensitive ones (largest KL, then most labels changed) returned
               to fp32 one at a time until the scan reviews pass the gate
  3. verify    that scheme on every validation review; while it fails the gate, the next most sensitive matrix
               goes back to fp32
  4. test      exact fp32 and the chosen scheme on --test-reviews test reviews (the benchmark's sample), once
The gate (inference/int8.py): at most 0.5% of the labels changed and accuracy within 0.3 points of fp32.
Writes one JSON record (--output) and, with --record, the adapter's int8.json, which 'auto' reads.

--schemes instead compares whole schemes on the scan reviews (no record): bf16, dynamic (every matrix),
dynamic_ffn_fp32 (feed-forward output projections in fp32), static_minmax, static_histogram (activation
scales calibrated on --calibration-reviews training reviews) and static_histogram_ffn_fp32.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import sample_reviews
from inference.int8 import HEAD_ROLES, Int8Scheme, gate_passed, linear_role, scheme_from_dict, write_int8_schemes
from inference.predictor import Predictor
from inference.torch_backend import TorchBackend, quantize_int8
from training import storage
from training.data import load_training_data
from training.device import cpu_features
from training.metrics import softmax
from training.model import SentimentConfig
from training.paths import RESULTS_DIR

SCHEMES = ("bf16", "dynamic", "dynamic_ffn_fp32", "static_minmax", "static_histogram", "static_histogram_ffn_fp32")
BACKENDS = ("pytorch", "onnxruntime")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("trained_model"), help="Adapter folder.")
    parser.add_argument("--data", help="The IMDb folder the adapter was trained on (needed to measure).")
    parser.add_argument("--scan-reviews", type=int, default=500, help="Validation reviews for the scan (default: 500).")
    parser.add_argument(
        "--validation-reviews", type=int, default=None, help="Validation reviews for the verdict (default: all)."
    )
    parser.add_argument("--test-reviews", type=int, default=1000, help="Test reviews read once at the end (0: none).")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="Comma-separated: pytorch, onnxruntime.")
    parser.add_argument("--schemes", default=None, help=f"Compare whole schemes instead: {', '.join(SCHEMES)}.")
    parser.add_argument("--calibration-reviews", type=int, default=64, help="Training reviews for static int8.")
    parser.add_argument("--batch-size", type=int, default=32, help="Reviews per forward pass (default: 32).")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "precision_check.json", help="The JSON record to write."
    )
    parser.add_argument(
        "--record", action="store_true", help="Also write the chosen schemes to the adapter's int8.json."
    )
    parser.add_argument(
        "--from-record",
        type=Path,
        default=None,
        help="Measure nothing: write the adapter's int8.json from this record of an earlier run (its schemes and "
        "their test check).",
    )
    args = parser.parse_args(argv)
    if args.data is None and args.from_record is None:
        parser.error("--data is required to measure (or give --from-record RECORD)")
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if unknown := sorted(set(args.backends) - set(BACKENDS)):
        parser.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if args.schemes is not None:
        args.schemes = [name.strip() for name in args.schemes.split(",") if name.strip()]
        if unknown := sorted(set(args.schemes) - set(SCHEMES)):
            parser.error(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    return args


# ----------------------------------------------------------------------------- measuring


def agreement(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """How far `logits` are from exact fp32's `reference` on the same reviews, and their accuracy."""
    p, q = softmax(reference), softmax(logits)
    kl = np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)
    accuracy, exact = float(np.mean(logits.argmax(1) == labels)), float(np.mean(reference.argmax(1) == labels))
    changed = int(np.sum(logits.argmax(1) != reference.argmax(1)))
    points = round(100 * (accuracy - exact), 2)
    return {
        "reviews": len(labels),
        "labels_changed": changed,
        "accuracy": round(accuracy, 4),
        "fp32_accuracy": round(exact, 4),
        "accuracy_change_points": points,
        "mean_kl": float(f"{kl.mean():.3g}"),
        "max_abs_logit_change": round(float(np.abs(logits - reference).max()), 4),
        "passed": gate_passed(changed, len(labels), points),
    }


def timed_logits(predictor: Predictor, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    logits = predictor.predict_logits(texts, batch_size=batch_size)
    return logits, round(len(texts) / (time.perf_counter() - started), 1)


class Int8Builds:
    """Predictors in int8 for one backend, quantizing every encoder matrix but `keep_fp32`, or `only` some."""

    def __init__(self, backend: str, exact: Predictor, workdir: Path):
        self.backend, self.exact, self.workdir = backend, exact, workdir
        if backend == "onnxruntime":
            from inference import export

            folder = workdir / "export"
            export.main(export.ExportConfig(model=exact.model_dir, output=folder))
            self.export_folder = folder

    def roles(self) -> list[str]:
        """The encoder's matrices by role, in order, the head left out (always fp32)."""
        if self.backend == "pytorch":
            found = [
                linear_role(name) for name, m in self.exact.model.named_modules() if isinstance(m, torch.nn.Linear)
            ]
        else:
            import onnx

            from inference.export import graph_matrix_roles
            from inference.onnx_backend import ONNX_FILE

            found = list(graph_matrix_roles(onnx.load(str(self.export_folder / ONNX_FILE))).values())
        return [role for role in dict.fromkeys(found) if role not in HEAD_ROLES]

    def build(self, keep_fp32: tuple[str, ...] = HEAD_ROLES, only: tuple[str, ...] = ()) -> Predictor:
        exact = self.exact
        if self.backend == "pytorch":
            model = copy.deepcopy(exact.model)
            names = None
            if only:
                names = [
                    name
                    for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and linear_role(name) in only
                ]
            model = quantize_int8(model, keep_fp32, names=names)
            return Predictor(TorchBackend(model, exact.tokenizer, exact.config, exact.device, exact.model_dir, "int8"))
        import onnxruntime

        from inference.export import quantize_graph
        from inference.onnx_backend import ONNX_FILE, ExportRecord, OnnxBackend, load_tokenizer

        target = self.workdir / "scan_int8.onnx"
        quantize_graph(self.export_folder / ONNX_FILE, target, keep_fp32, only=only)
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        tokenizer = load_tokenizer(self.export_folder / "tokenizer.json")
        record = ExportRecord.load(self.export_folder)
        return Predictor(OnnxBackend(session, tokenizer, record, self.export_folder, "int8"))


def scan(builds: Int8Builds, texts, reference, labels, batch_size: int) -> list[dict]:
    """Each encoder matrix quantized alone: its effect on the labels and the probabilities."""
    rows = []
    for role in builds.roles():
        logits, rate = timed_logits(builds.build(only=(role,)), texts, batch_size)
        rows.append({"role": role, **agreement(logits, reference, labels), "reviews_per_s": rate})
        print(json.dumps({"backend": builds.backend, "step": "scan", **rows[-1]}), flush=True)
    return rows


def sensitivity_order(rows: list[dict]) -> list[str]:
    """Roles from the most sensitive down: the largest mean KL divergence first, then the most labels changed.

    KL first: one matrix alone changes 0 to 5 labels of 500, too few to rank by, while the divergences add up
    roughly matrix by matrix, so returning the largest ones to fp32 lowers the whole model's soonest."""
    return [row["role"] for row in sorted(rows, key=lambda row: (-row["mean_kl"], -row["labels_changed"]))]


def choose_and_verify(
    builds: Int8Builds, order: list[str], scan_set: tuple, validation: tuple, batch_size: int
) -> dict:
    """Return matrices to fp32, most sensitive first, until the scan reviews and then every validation review pass."""
    keep, steps = list(HEAD_ROLES), []
    for stage, (texts, reference, labels) in (("scan reviews", scan_set), ("validation", validation)):
        while True:
            logits, rate = timed_logits(builds.build(tuple(keep)), texts, batch_size)
            result = agreement(logits, reference, labels)
            steps.append({"on": stage, "keep_fp32": list(keep), **result, "reviews_per_s": rate})
            print(json.dumps({"backend": builds.backend, "step": "choose", **steps[-1]}), flush=True)
            remaining = [role for role in order if role not in keep]
            if result["passed"] or not remaining:
                break
            keep.append(remaining[0])
    verdict = steps[-1]
    return {"keep_fp32": keep, "validation": {k: v for k, v in verdict.items() if k != "keep_fp32"}, "steps": steps}


# ----------------------------------------------------------------------------- whole schemes (--schemes)


def feed_forward_output(name: str) -> bool:
    """BERT's `layer.N.output.dense` and DistilBERT's `ffn.lin2`: the projection back from the wide GELU layer."""
    return linear_role(name).endswith("ffn.out")


class _StaticInt8Linear(torch.nn.Module):
    """A Linear between quantize and dequantize stubs, so eager-mode static quantization converts it alone."""

    def __init__(self, linear: torch.nn.Linear):
        from torch.ao.quantization import DeQuantStub, QuantStub

        super().__init__()
        self.quant, self.linear, self.dequant = QuantStub(), linear, DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.linear(self.quant(x)))


def static_int8(model, keep_fp32, observer, calibrate) -> torch.nn.Module:
    """A copy of `model` with every encoder Linear (except the head and `keep_fp32` ones) in static int8, calibrated
    by calling `calibrate(copy)` on training reviews between prepare and convert."""
    from torch.ao.quantization import QConfig, convert, default_per_channel_weight_observer, prepare

    model = copy.deepcopy(model)
    qconfig = QConfig(activation=observer.with_args(reduce_range=False), weight=default_per_channel_weight_observer)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, torch.nn.Linear) and linear_role(full) not in HEAD_ROLES and not keep_fp32(full):
                wrapped = _StaticInt8Linear(child)
                wrapped.qconfig = qconfig
                setattr(parent, name, wrapped)
    prepare(model, inplace=True)
    calibrate(model)
    return convert(model, inplace=True)


def compare_schemes(args, exact: Predictor, split, texts, reference, labels) -> list[dict]:
    from torch.ao.quantization import HistogramObserver, MinMaxObserver

    calibration_texts = split.train.sample(min(args.calibration_reviews, len(split.train)), random_state=1)
    calibration_texts = calibration_texts["text"].tolist()

    def wrap(model) -> Predictor:
        return Predictor(TorchBackend(model, exact.tokenizer, exact.config, exact.device, exact.model_dir))

    def calibrate(model) -> None:
        wrap(model).predict_logits(calibration_texts, batch_size=16)

    feed_forward = tuple(
        dict.fromkeys(linear_role(name) for name, _ in exact.model.named_modules() if feed_forward_output(name))
    )
    builders = {
        "bf16": lambda: copy.deepcopy(exact.model).to(torch.bfloat16),
        "dynamic": lambda: quantize_int8(copy.deepcopy(exact.model)),
        "dynamic_ffn_fp32": lambda: quantize_int8(copy.deepcopy(exact.model), HEAD_ROLES + feed_forward),
        "static_minmax": lambda: static_int8(exact.model, lambda name: False, MinMaxObserver, calibrate),
        "static_histogram": lambda: static_int8(exact.model, lambda name: False, HistogramObserver, calibrate),
        "static_histogram_ffn_fp32": lambda: static_int8(
            exact.model, feed_forward_output, HistogramObserver, calibrate
        ),
    }
    rows = []
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore")
        for name in args.schemes:
            logits, rate = timed_logits(wrap(builders[name]()), texts, args.batch_size)
            rows.append({"scheme": name, **agreement(logits, reference, labels), "reviews_per_s": rate})
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_record is not None:
        schemes, measured = schemes_from_record(args.from_record)
        write_int8_schemes(args.model, schemes, {**measured, "written_from_record_by": shlex.join(sys.argv)})
        return {backend: scheme.as_dict() for backend, scheme in schemes.items()}
    started = datetime.datetime.now().astimezone()
    settings = SentimentConfig.load(args.model).training
    split = load_training_data(
        args.data, settings["validation_fraction"], settings["seed"], settings.get("train_limit")
    )
    validation = split.validation.sample(
        min(args.validation_reviews or len(split.validation), len(split.validation)), random_state=0
    )
    texts, labels = validation["text"].tolist(), validation["label"].to_numpy()
    exact = Predictor.from_pretrained(args.model, device="cpu", precision="fp32", calibrated=False)
    reference, rate = timed_logits(exact, texts, args.batch_size)
    scan_size = min(args.scan_reviews, len(texts))  # the first reviews of the shuffled validation sample
    scan_set = (texts[:scan_size], reference[:scan_size], labels[:scan_size])
    record = {
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join(["python", "scripts/precision_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "model": str(args.model),
        "machine": {
            "cpu_features": sorted(cpu_features()),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "validation": {
            "reviews": len(texts),
            "scan_reviews": scan_size,
            "split": "carved from train by the adapter's "
            f"recorded seed {settings['seed']} and fraction {settings['validation_fraction']}",
        },  # fmt: skip
        "fp32": {"accuracy": round(float(np.mean(reference.argmax(1) == labels)), 4), "reviews_per_s": rate},
    }
    print(json.dumps({"step": "fp32", **record["fp32"], "reviews": len(texts)}), flush=True)
    if args.schemes is not None:
        record["schemes"] = compare_schemes(args, exact, split, *scan_set)
        return write_record(args.output, record)
    schemes, test = {}, test_sample(args)
    with tempfile.TemporaryDirectory(prefix="precision_check_") as work:
        for backend in args.backends:
            builds = Int8Builds(backend, exact, Path(work))
            rows = scan(builds, *scan_set, args.batch_size)
            chosen = choose_and_verify(
                builds, sensitivity_order(rows), scan_set, (texts, reference, labels), args.batch_size
            )
            record[backend] = {"scan": rows, **chosen}
            gate = {
                **chosen["validation"],
                "split": "validation",
                "date": record["date"],
                "cpu": " ".join(record["machine"]["cpu_features"]),
            }
            if test is not None:
                record[backend]["test"] = test_figures(
                    exact, builds.build(tuple(chosen["keep_fp32"])), test, args.batch_size
                )
            check = record[backend].get("test", {})
            schemes[backend] = Int8Scheme(backend, tuple(chosen["keep_fp32"]), gate=gate, check=check)
    record["schemes"] = {backend: scheme.as_dict() for backend, scheme in schemes.items()}
    if args.record:
        measured = {"command": record["command"], "record": str(args.output), "date": record["date"]}
        write_int8_schemes(args.model, schemes, measured)
    return write_record(args.output, record)


def schemes_from_record(path: Path) -> tuple[dict[str, Int8Scheme], dict]:
    """The schemes a record of this script chose, each with its test check, and how they were measured: for
    writing an adapter's int8.json again from a committed record (after the record format grew), without
    measuring again."""
    record = json.loads(path.read_text(encoding="utf-8"))
    schemes = {}
    for backend, entry in record["schemes"].items():
        check = record.get(backend, {}).get("test", {})
        schemes[backend] = scheme_from_dict({**entry, "check": check}, backend)
    measured = {"command": record["command"], "record": str(path), "date": record["date"]}
    return schemes, measured


def test_sample(args):
    """The test reviews read once, for the chosen schemes only: the benchmark's sample (seed 0)."""
    if args.test_reviews <= 0:
        return None
    reviews = sample_reviews(args.data, args.test_reviews, seed=0)
    return reviews["text"].tolist(), reviews["label"].to_numpy()


def test_figures(exact: Predictor, chosen: Predictor, test, batch_size: int) -> dict:
    texts, labels = test
    reference, _ = timed_logits(exact, texts, batch_size)
    logits, _ = timed_logits(chosen, texts, batch_size)
    return {"sample": "IMDb test, random_state 0 (the benchmark's)", **agreement(logits, reference, labels)}


def write_record(path: Path, record: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(path, record)
    print(f"Record: {path}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
