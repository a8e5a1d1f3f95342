"""int8 schemes and their gate: which matrices a backend's int8 leaves in fp32, and whether that scheme kept the
labels of exact fp32 on the adapter's validation reviews. A model folder carries the record (int8.json beside
an adapter; the export's sentiment_export.json), so 'auto' serves int8 only where it was measured to be safe.

Matrices are named by their role in the encoder, not by a library's names, so one record speaks for PyTorch's
Linear modules and onnxruntime's MatMul and Attention nodes alike: `layer.3.ffn.out` is BERT's
`encoder.layer.3.output.dense`, DistilBERT's `transformer.layer.3.ffn.lin2`, and the fourth layer's last MatMul
in the exported graph. scripts/precision_check.py measures the schemes and writes the records.

The standard library only: the torch-free ONNX backend reads it too.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from training import storage
from training.errors import ModelLoadError

INT8_RECORD_FILE = "int8.json"
RECORD_FORMAT = 1
MAX_RECORD_BYTES = 256 * 1024  # an adapter folder is someone else's file: bounded before it is parsed
BACKENDS = ("pytorch", "onnxruntime")

# The gate (issue 21): int8 may change at most this share of exact fp32's labels on the validation reviews,
# and cost at most this many points of accuracy.
MAX_LABELS_CHANGED_FRACTION = 0.005
MAX_ACCURACY_DROP_POINTS = 0.3

HEAD_ROLES = ("pooler", "classifier")
# What int8 keeps in fp32 where no measured scheme says otherwise: the head, which decides the label and costs nothing.
DEFAULT_KEEP_FP32 = HEAD_ROLES
LAYER_ROLES = ("attention.qkv", "attention.output", "ffn.in", "ffn.out")
# BERT (and RoBERTa) and DistilBERT module names -> role; the layer index is the pattern's first group.
_ROLE_PATTERNS = (
    (r"layer\.(\d+)\.attention\.self\.(query|key|value)$", "attention.qkv"),
    (r"layer\.(\d+)\.attention\.(q_lin|k_lin|v_lin)$", "attention.qkv"),
    (r"layer\.(\d+)\.attention\.output\.dense$", "attention.output"),
    (r"layer\.(\d+)\.attention\.out_lin$", "attention.output"),
    (r"layer\.(\d+)\.intermediate\.dense$", "ffn.in"),
    (r"layer\.(\d+)\.ffn\.lin1$", "ffn.in"),
    (r"layer\.(\d+)\.output\.dense$", "ffn.out"),
    (r"layer\.(\d+)\.ffn\.lin2$", "ffn.out"),
)
ROLE_PATTERN = re.compile(r"(layer\.\d{1,3}\.(attention\.qkv|attention\.output|ffn\.in|ffn\.out)|pooler|classifier)")


def linear_role(module_name: str) -> str:
    """The role of a Linear module by its name: `layer.N.<part>`, `pooler` (BERT's pooler, DistilBERT's
    pre_classifier), `classifier`, or the module name itself for a layer no pattern knows."""
    for pattern, part in _ROLE_PATTERNS:
        found = re.search(pattern, module_name)
        if found:
            return f"layer.{int(found.group(1))}.{part}"
    if module_name.endswith(("pooler.dense", "pre_classifier")):
        return "pooler"
    if module_name.split(".")[-1] in ("classifier", "score"):
        return "classifier"
    return module_name


def gate_passed(labels_changed: int, reviews: int, accuracy_change_points: float) -> bool:
    """The gate: at most MAX_LABELS_CHANGED_FRACTION of the labels changed and at most MAX_ACCURACY_DROP_POINTS
    points of accuracy lost (or gained: a change either way is a change) against exact fp32."""
    return (
        reviews > 0
        and labels_changed <= MAX_LABELS_CHANGED_FRACTION * reviews
        and abs(accuracy_change_points) <= MAX_ACCURACY_DROP_POINTS
    )


@dataclasses.dataclass(frozen=True)
class Int8Scheme:
    """How one backend quantizes: dynamic int8 with per-channel weights, every encoder matrix but `keep_fp32`.

    `gate`: the measurement behind it on validation reviews (reviews, labels_changed, accuracy, fp32_accuracy,
    where and when); `check`: the same figures on test reviews, read once for the chosen scheme. `passed` and
    `held` are recomputed from those figures, never read from the file."""

    backend: str
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    reduce_range: bool = False  # onnxruntime: 7-bit weights, so AVX2's 16-bit sums cannot saturate
    gate: dict = dataclasses.field(default_factory=dict)
    check: dict = dataclasses.field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the scheme passed the gate on the validation reviews (False when there is no gate record)."""
        return _within_gate(self.gate)

    @property
    def held(self) -> bool | None:
        """Whether the gate still held on the test reviews read once (None: not checked). A scheme chosen on
        validation that fails here is not served by 'auto': its validation margin did not carry over."""
        return _within_gate(self.check) if self.check else None

    @property
    def instructions(self) -> tuple[str, ...]:
        """The CPU instructions (any one of them) on which this scheme computes the integers its gate measured.

        VNNI and AMX accumulate uint8 x int8 products exactly; AVX2 alone adds pairs of them into 16 bits, which
        8-bit weights can overflow. PyTorch's fbgemm quantizes activations to 7 bits (reduce_range) and
        onnxruntime does the same to weights with `reduce_range`, and then AVX2 is exact too."""
        exact = ("avx512_vnni", "avx_vnni", "amx_int8")
        return (*exact, "avx2") if self.backend == "pytorch" or self.reduce_range else exact

    def summary(self) -> str:
        """One line on the gate: '3 of 2,500 validation labels changed, accuracy -0.04 points: passed the gate'."""
        if not self.gate:
            return "not measured"
        verdict = "passed" if self.passed else "failed"
        return f"{_figures(self.gate, self.gate.get('split', 'validation'))}: {verdict} the gate"

    def check_summary(self) -> str:
        """One line on the test check: '7 of 1,000 test labels changed, accuracy -0.30 points: failed'."""
        if not self.check:
            return "not checked on test reviews"
        return f"{_figures(self.check, 'test')}: {'held' if self.held else 'failed'}"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "keep_fp32": list(self.keep_fp32), "passed": self.passed, "held": self.held}


def _within_gate(figures: dict) -> bool:
    try:
        return gate_passed(
            int(figures["labels_changed"]), int(figures["reviews"]), float(figures["accuracy_change_points"])
        )
    except (KeyError, TypeError, ValueError):
        return False


def _figures(figures: dict, split: str) -> str:
    return (
        f"{figures.get('labels_changed')} of {figures.get('reviews', 0):,} {split} labels changed, "
        f"accuracy {figures.get('accuracy_change_points', 0):+.2f} points"
    )


def _plain(name: str, value) -> dict:
    """`value` if it is an object of plain values (a record's gate or check), else a ValueError."""
    if not isinstance(value, dict) or not all(
        isinstance(item, (str, int, float, bool)) or item is None for item in value.values()
    ):
        raise ValueError(f"{name} must be an object of plain values")
    return value


def scheme_from_dict(data: dict, backend: str) -> Int8Scheme:
    """A scheme from its record, every field checked: roles must be roles, the gate a flat dict of plain values."""
    keep = data.get("keep_fp32", list(DEFAULT_KEEP_FP32))
    if (
        not isinstance(keep, list)
        or len(keep) > 1000
        or not all(isinstance(role, str) and ROLE_PATTERN.fullmatch(role) for role in keep)
    ):
        raise ValueError("keep_fp32 must be a list of roles such as 'layer.5.ffn.out', 'pooler' or 'classifier'")
    gate, check = _plain("gate", data.get("gate", {})), _plain("check", data.get("check", {}))
    return Int8Scheme(backend, tuple(keep), bool(data.get("reduce_range", False)), gate, check)


def read_int8_schemes(folder: str | Path) -> dict[str, Int8Scheme]:
    """The schemes recorded in a folder's int8.json, by backend ({} when it has none).

    A damaged record is refused in one message: it decides whether 'auto' serves int8."""
    path = Path(folder) / INT8_RECORD_FILE
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise ValueError(f"larger than {MAX_RECORD_BYTES // 1024} KB")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not an int8 record of format {RECORD_FORMAT}")
        return {
            backend: scheme_from_dict(entry, backend)
            for backend, entry in data.get("schemes", {}).items()
            if backend in BACKENDS and isinstance(entry, dict)
        }
    except (OSError, ValueError, AttributeError) as error:
        raise ModelLoadError(
            f"{path} is unreadable or corrupt ({error}). Delete it to serve without int8 by default, or measure "
            f"again: python scripts/precision_check.py --model {Path(folder)} --record"
        ) from error


def write_int8_schemes(folder: str | Path, schemes: dict[str, Int8Scheme], measured: dict) -> None:
    """int8.json: the schemes by backend and how they were measured (command, data, versions), atomically."""
    record = {
        "format": RECORD_FORMAT,
        "gate": {
            "max_labels_changed_fraction": MAX_LABELS_CHANGED_FRACTION,
            "max_accuracy_drop_points": MAX_ACCURACY_DROP_POINTS,
        },
        "measured": measured,
        "schemes": {backend: scheme.as_dict() for backend, scheme in schemes.items()},
    }
    storage.write_json(Path(folder) / INT8_RECORD_FILE, record)
