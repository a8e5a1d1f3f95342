"""The onnxruntime backend of `inference.predictor.Predictor`: an ONNX export (inference/export.py) served with
onnxruntime, tokenizers and numpy only.

    from inference.predictor import Predictor
    predictor = Predictor.from_pretrained("exported")   # a folder holding sentiment_export.json and model.onnx

The backend tokenizes and runs the graph; the Predictor does everything else (batching, windows, temperature,
labels), so an export serves the figures the adapter does (tests/test_backends.py checks logits within 1e-4).

This module must import neither torch nor pandas nor transformers, nor any project module that does: the pure
steps it shares with the PyTorch backend (clipping, truncation, windows) come from training/text.py, which
imports numpy alone; only the tokenizer differs (`tokenizers` here, transformers' wrapper there).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from inference.int8 import Int8Scheme, scheme_from_dict
from training import storage  # the standard library only: no torch, no pandas
from training.errors import ModelLoadError
from training.text import (
    TRUNCATION_STRATEGIES,
    clip_characters,
    truncate_token_ids,
    window_plan,
    window_token_ids,
)

EXPORT_RECORD_FILE = "sentiment_export.json"
ONNX_FILE = "model.onnx"  # fp32, its attention, layer norms and GELUs fused by onnxruntime's optimizer
ONNX_INT8_FILE = "model_int8.onnx"  # the same graph, dynamic int8 by the scheme in the record
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FORMAT = 2  # bump when the record's meaning changes; loading refuses other versions
MAX_RECORD_BYTES = 1024 * 1024


class ExportError(ModelLoadError):
    """An export folder that cannot be written or served; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class ExportRecord:
    """What an export needs to predict exactly as the adapter did, saved as sentiment_export.json."""

    base_model: str
    labels: tuple[str, ...]
    max_length: int
    truncation: str  # one of TRUNCATION_STRATEGIES
    head_fraction: float  # head+tail: the share of the token budget kept from the beginning
    chars_per_token_bound: int  # texts are clipped to max_length * this many characters from each end first
    max_windows: int  # sliding windows read at most this many windows of a review
    prefix_ids: tuple[int, ...]  # special tokens before a text ([CLS])
    suffix_ids: tuple[int, ...]  # special tokens after it ([SEP])
    pad_id: int
    temperature: float | None  # None: the adapter had no calibration.json
    onnx: dict = dataclasses.field(default_factory=dict)  # files, opset, inputs, outputs, fused operators
    int8: dict = dataclasses.field(default_factory=dict)  # the int8 scheme of ONNX_INT8_FILE and its gate ({}: none)
    lora: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    calibration: dict = dataclasses.field(default_factory=dict)
    exported: dict = dataclasses.field(default_factory=dict)  # from where, when, with which versions, parity check
    format: int = EXPORT_FORMAT

    def save(self, folder: Path) -> None:
        data = dataclasses.asdict(self)
        for key in ("labels", "prefix_ids", "suffix_ids"):
            data[key] = list(data[key])
        storage.write_json(Path(folder) / EXPORT_RECORD_FILE, data)  # atomic, like every file written for a user

    @classmethod
    def load(cls, folder: Path) -> ExportRecord:
        path = Path(folder) / EXPORT_RECORD_FILE
        try:
            if path.stat().st_size > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES // 1024} KB")
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {field.name for field in dataclasses.fields(cls)}
            record = cls(**{key: value for key, value in data.items() if key in known})
            record = dataclasses.replace(
                record,
                labels=tuple(record.labels),
                prefix_ids=tuple(int(i) for i in record.prefix_ids),
                suffix_ids=tuple(int(i) for i in record.suffix_ids),
            )
        except (OSError, ValueError, TypeError) as error:
            raise ExportError(f"{path} is unreadable or corrupt ({error}). Export the adapter again.") from error
        if record.format != EXPORT_FORMAT:
            raise ExportError(
                f"{path} is export format {record.format}; this version reads format {EXPORT_FORMAT}. "
                f"Export the adapter again with this version's inference/export.py."
            )
        if record.truncation not in TRUNCATION_STRATEGIES:
            raise ExportError(f"{path} names an unknown truncation '{record.truncation}'. Export the adapter again.")
        return record

    def int8_scheme(self) -> Int8Scheme | None:
        """The scheme ONNX_INT8_FILE was quantized with, and its gate; None for an export without one."""
        if not self.int8:
            return None
        try:
            return scheme_from_dict(self.int8, "onnxruntime")
        except ValueError as error:
            raise ExportError(f"The export's int8 record is corrupt ({error}). Export the adapter again.") from error


def is_export(folder: str | Path) -> bool:
    """True for a folder written by inference/export.py (an ONNX model and its record), not an adapter folder."""
    folder = Path(folder)
    return (folder / EXPORT_RECORD_FILE).is_file() and (folder / ONNX_FILE).is_file()


# ----------------------------------------------------------------------------- tokenization (mirrors training.text)


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids without special tokens, untruncated: what the Hugging Face tokenizer gives training.text.encode_texts."""
    return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def encode_texts(tokenizer, texts: list[str], record: ExportRecord) -> list[list[int]]:
    """training.text.encode_texts with a `tokenizers.Tokenizer` and the special tokens from the record."""
    budget = record.max_length - len(record.prefix_ids) - len(record.suffix_ids)
    clipped = [clip_characters(text, record.max_length, record.chars_per_token_bound) for text in texts]
    prefix, suffix = list(record.prefix_ids), list(record.suffix_ids)
    return [
        prefix + truncate_token_ids(ids, budget, record.truncation, record.head_fraction) + suffix
        for ids in _token_ids(tokenizer, clipped)
    ]


def encode_windows(tokenizer, texts: list[str], record: ExportRecord) -> tuple[list[list[int]], list[int]]:
    """training.text.encode_windows: every text as windows of max_length tokens, half a window apart."""
    budget = record.max_length - len(record.prefix_ids) - len(record.suffix_ids)
    stride, longest = window_plan(budget, record.max_windows)
    clipped = [clip_characters(text, longest, record.chars_per_token_bound) for text in texts]
    prefix, suffix = list(record.prefix_ids), list(record.suffix_ids)
    windows, owner = [], []
    for index, ids in enumerate(_token_ids(tokenizer, clipped)):
        kept = truncate_token_ids(ids, longest, "head_tail", record.head_fraction)
        for window in window_token_ids(kept, budget, stride):
            windows.append(prefix + window + suffix)
            owner.append(index)
    return windows, owner


def load_tokenizer(path: Path):
    """The exported tokenizer with truncation and padding off: encode_texts truncates, the Predictor pads."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


# ----------------------------------------------------------------------------- the graph


def external_data_references(model) -> list[str]:
    """Names of the tensors in an onnx ModelProto whose data lives outside it (initializers, sparse initializers,
    constants in node attributes, subgraphs and functions included)."""
    from onnx import TensorProto

    found = []

    def tensor(item) -> None:
        if item.data_location == TensorProto.EXTERNAL or len(item.external_data):
            found.append(item.name or "(unnamed)")

    def nodes(items) -> None:
        for node in items:
            for attribute in node.attribute:
                for item in [attribute.t, *attribute.tensors]:
                    tensor(item)
                for item in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                    tensor(item.values)
                for inner in [attribute.g, *attribute.graphs]:
                    graph(inner)

    def graph(item) -> None:
        for initializer in item.initializer:
            tensor(initializer)
        for sparse in item.sparse_initializer:
            tensor(sparse.values)
        nodes(item.node)

    graph(model.graph)
    for function in model.functions:
        nodes(function.node)
    return found


def read_graph(path: Path) -> bytes:
    """The graph file's bytes, refused if it points to external data: the export writes none, and a session
    would read whatever file such a reference names. The session is built from these same bytes."""
    try:
        import onnx
    except ImportError as error:
        raise ExportError("Serving an export needs onnx to check it: pip install -r requirements-export.txt") from error
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf raises its own DecodeError for a damaged file
        raise ExportError(f"{path} is not a readable ONNX model ({error}). Export the adapter again.") from error
    external = external_data_references(model)
    if external:
        raise ExportError(
            f"{path} refers to external data ({', '.join(external[:3])}); an export by inference/export.py holds "
            f"its weights in the one file. Export the adapter again."
        )
    return data


# ----------------------------------------------------------------------------- the backend


class OnnxBackend:
    """An exported graph in an onnxruntime session and its tokenizer: token ids in, logits out."""

    name = "onnxruntime"
    precisions = ("fp32", "int8")  # an export holds these graphs; bf16 is the PyTorch backend's
    device = "cpu"
    device_name = "CPU (onnxruntime)"
    length_multiple = None  # on a CPU padding only costs

    def __init__(self, session, tokenizer, record: ExportRecord, folder: Path, precision: str):
        self.session, self.tokenizer, self.record, self.folder = session, tokenizer, record, Path(folder)
        self.precision = precision
        self._input_names = {node.name for node in session.get_inputs()}

    @staticmethod
    def device_for(requested: str | None) -> str:
        if requested not in (None, "", "auto", "cpu"):
            raise ExportError(
                f"An ONNX export runs on the CPU here, not '{requested}': drop --device or use --device cpu."
            )
        return "cpu"

    @staticmethod
    def int8_scheme(folder: Path) -> Int8Scheme | None:
        return ExportRecord.load(folder).int8_scheme()

    @classmethod
    def load(cls, folder: Path, device: str, precision: str, threads: int | None = None, **_) -> OnnxBackend:
        """The export's fp32 or int8 graph in a session. `threads`: onnxruntime's intra-op threads (None: its
        default, one per physical core). The PyTorch backend's options (trust_pickle, ...) do not apply."""
        import onnxruntime

        folder = Path(folder)
        record = ExportRecord.load(folder)
        if not (folder / TOKENIZER_FILE).is_file():
            raise ExportError(f"{folder} has no {TOKENIZER_FILE}. Export the adapter again.")
        name = record.onnx.get("int8_file", ONNX_INT8_FILE) if precision == "int8" else ONNX_FILE
        if Path(name).name != name or not (folder / name).is_file():  # a bare file name inside the folder, present
            raise ExportError(
                f"{folder} has no int8 graph ({name}). Export the adapter again with inference/export.py."
            )
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        graph = read_graph(folder / name)
        try:
            session = onnxruntime.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a damaged or foreign file
            raise ExportError(f"{folder / name} could not be loaded ({error}). Export the adapter again.") from error
        return cls(session, load_tokenizer(folder / TOKENIZER_FILE), record, folder, precision)

    @property
    def config(self) -> ExportRecord:
        """Named like the PyTorch backend's SentimentConfig: base_model, labels, max_length, truncation, lora."""
        return self.record

    @property
    def temperature(self) -> float:
        return self.record.temperature if self.record.temperature is not None else 1.0

    @property
    def pad_id(self) -> int:
        return self.record.pad_id

    @property
    def metrics(self) -> dict:
        return self.record.metrics

    def encode(self, texts: list[str], long_reviews: str) -> tuple[list[list[int]], list[int]]:
        if long_reviews == "sliding":
            return encode_windows(self.tokenizer, texts, self.record)
        return encode_texts(self.tokenizer, texts, self.record), list(range(len(texts)))

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: value for name, value in batch.items() if name in self._input_names}
        return self.session.run(["logits"], feed)[0]

    def details(self) -> dict:
        """What info() adds for this backend: the runtime's version and the export's record."""
        import onnxruntime

        scheme = self.record.int8_scheme()
        return {
            "onnxruntime": onnxruntime.__version__,
            "export": {**self.record.exported, "graph": self.record.onnx},
            **({"int8": scheme.as_dict()} if self.precision == "int8" and scheme else {}),
        }
