"""`OnnxPredictor`: an ONNX export (inference/export.py) served with onnxruntime, tokenizers and numpy only.

    from inference.onnx_predictor import OnnxPredictor, is_export
    predictor = OnnxPredictor.from_pretrained("exported")
    predictor.predict_one("A wonderful film.")  # Prediction(label='POSITIVE', confidence=..., probabilities=...)

The same surface as `inference.predictor.Predictor` (predict_logits, predict_proba, predict, predict_one,
labels, temperature, device_name, info) and the same preprocessing, so a deployment without PyTorch gets the
figures evaluation reports: head+tail truncation of the token ids, length-sorted batches, the calibrated
temperature, the labels the adapter was trained with (tests/test_export.py checks logits within 1e-4).

This module must import neither torch nor pandas, nor any project module that does: the pure steps it
shares with the Predictor (checking, clipping, truncation, windows, padding) come from training/text.py,
which imports numpy alone; only the tokenizer differs (`tokenizers` here, transformers' wrapper there).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from inference.scoring import Scoring
from training import storage  # the standard library only: no torch, no pandas
from training.text import (
    TRUNCATION_STRATEGIES,
    clip_characters,
    pad_token_ids,
    truncate_token_ids,
    window_plan,
    window_token_ids,
)
from training.text import EmptyTextError as EmptyTextError  # re-exported: callers catch these from here
from training.text import Prediction as Prediction
from training.text import TextError as TextError

EXPORT_RECORD_FILE = "sentiment_export.json"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FORMAT = 1  # bump when the record's meaning changes; from_pretrained refuses other versions
LONG_REVIEW_MODES = ("truncate", "sliding")


class ExportError(RuntimeError):
    """An export folder that cannot be served; the message says why and what to do."""


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
    onnx: dict = dataclasses.field(default_factory=dict)  # file, opset, inputs, outputs
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
            data = json.loads(path.read_text())
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


def is_export(folder: str | Path) -> bool:
    """True for a folder written by inference/export.py (an ONNX model and its record), not an adapter folder."""
    folder = Path(folder)
    return (folder / EXPORT_RECORD_FILE).is_file() and (folder / ONNX_FILE).is_file()


# ----------------------------------------------------------------------------- tokenization (mirrors training.data)


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids without special tokens, untruncated: what the Hugging Face tokenizer gives encode_texts."""
    return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def encode_texts(tokenizer, texts: list[str], record: ExportRecord) -> list[list[int]]:
    """training.data.encode_texts with a `tokenizers.Tokenizer` and the special tokens from the record."""
    budget = record.max_length - len(record.prefix_ids) - len(record.suffix_ids)
    clipped = [clip_characters(text, record.max_length, record.chars_per_token_bound) for text in texts]
    prefix, suffix = list(record.prefix_ids), list(record.suffix_ids)
    return [
        prefix + truncate_token_ids(ids, budget, record.truncation, record.head_fraction) + suffix
        for ids in _token_ids(tokenizer, clipped)
    ]


def encode_windows(tokenizer, texts: list[str], record: ExportRecord) -> tuple[list[list[int]], list[int]]:
    """training.data.encode_windows: every text as windows of max_length tokens, half a window apart."""
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
    """The exported tokenizer with truncation and padding off: encode_texts truncates, the predictor pads."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


# ----------------------------------------------------------------------------- the predictor


class OnnxPredictor(Scoring):
    """An exported model loaded once into an onnxruntime session; predicts one review or many in length-sorted batches.

    `temperature`: logits are divided by it before the softmax (1.0 = uncalibrated).
    `long_reviews`: "truncate" keeps the head and tail the adapter was trained with; "sliding" reads the
    whole review in overlapping windows and averages their logits.
    """

    precision = "fp32"  # the export is the merged fp32 model

    def __init__(self, session, tokenizer, record: ExportRecord, folder: Path, temperature: float, long_reviews: str):
        if long_reviews not in LONG_REVIEW_MODES:
            raise ValueError(f"Unknown long-review mode '{long_reviews}'; choose from {', '.join(LONG_REVIEW_MODES)}.")
        self.session, self.tokenizer, self.record, self.folder = session, tokenizer, record, folder
        self.temperature, self.long_reviews = float(temperature), long_reviews
        self._input_names = {node.name for node in session.get_inputs()}

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | None = None,
        precision: str = "auto",
        calibrated: bool = True,
        long_reviews: str = "truncate",
        trust_pickle: bool = False,
        threads: int | None = None,
    ) -> OnnxPredictor:
        """Load an export. Takes the Predictor's arguments so a command line can pass its flags through:
        `device` and `precision` only as far as an export honours them (the CPU, fp32); `trust_pickle` is
        ignored (an export holds no pickle). `threads`: onnxruntime's intra-op threads (None: its default,
        one per physical core)."""
        import onnxruntime

        folder = Path(folder)
        if not is_export(folder):
            raise ExportError(
                f"{folder} is not an ONNX export (no {EXPORT_RECORD_FILE} and {ONNX_FILE}). Make one with: "
                f"python inference/export.py --model trained_model --output {folder}"
            )
        if device not in (None, "", "auto", "cpu"):
            raise ExportError(
                f"An ONNX export runs on the CPU here, not '{device}': drop --device or use --device cpu."
            )
        if precision not in ("auto", "fp32"):
            raise ExportError(
                f"An ONNX export is the fp32 model, not '{precision}': drop --precision, or serve the adapter folder."
            )
        record = ExportRecord.load(folder)
        if not (folder / TOKENIZER_FILE).is_file():
            raise ExportError(f"{folder} has no {TOKENIZER_FILE}. Export the adapter again.")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = onnxruntime.InferenceSession(
                str(folder / ONNX_FILE), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own types for a damaged or foreign file
            raise ExportError(
                f"{folder / ONNX_FILE} could not be loaded ({error}). Export the adapter again."
            ) from error
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
        temperature = record.temperature if calibrated and record.temperature is not None else 1.0
        return cls(session, tokenizer, record, folder, temperature, long_reviews)

    @property
    def config(self) -> ExportRecord:
        """Named like the Predictor's SentimentConfig: base_model, labels, max_length, truncation."""
        return self.record

    @property
    def labels(self) -> tuple[str, ...]:
        return self.record.labels

    @property
    def device_name(self) -> str:
        return "CPU (onnxruntime)"

    def info(self) -> dict:
        """What is loaded: the same keys as Predictor.info(), plus the export's own record."""
        import onnxruntime

        return {
            "base_model": self.record.base_model,
            "adapter": str(self.folder),
            "device": self.device_name,
            "precision": self.precision,
            "temperature": self.temperature,
            "long_reviews": self.long_reviews,
            "max_length": self.record.max_length,
            "truncation": self.record.truncation,
            "lora": self.record.lora,
            "metrics": self.record.metrics,
            "onnxruntime": onnxruntime.__version__,
            "export": {**self.record.exported, "graph": self.record.onnx},
        }

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        if self.long_reviews == "sliding":
            return encode_windows(self.tokenizer, texts, self.record)
        return encode_texts(self.tokenizer, texts, self.record), list(range(len(texts)))

    def explain(self, text: str, n_steps: int = 50):
        raise ExportError(
            "Explanations need PyTorch and the adapter (Integrated Gradients): run with --model trained_model."
        )

    def _forward(self, token_ids: list[list[int]], batch_size: int, progress: bool) -> np.ndarray:
        """Logits for already-encoded inputs, run longest first so each batch pads to similar lengths."""
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        logits = np.empty((len(token_ids), len(self.labels)), dtype=np.float64)
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm  # optional: only for a progress bar

            batches = tqdm(batches, desc="Predicting", unit="batch")
        for start in batches:
            chosen = order[start : start + batch_size]
            batch = pad_token_ids([token_ids[i] for i in chosen], self.record.pad_id)
            feed = {name: value for name, value in batch.items() if name in self._input_names}
            logits[chosen] = self.session.run(["logits"], feed)[0]
        return logits
