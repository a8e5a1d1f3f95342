"""`Predictor`: a trained model loaded once, predicting the sentiment of movie reviews.

    from inference.predictor import Predictor
    predictor = Predictor.from_pretrained("trained_model")  # an adapter folder: PyTorch
    predictor = Predictor.from_pretrained("exported")       # an ONNX export (inference/export.py): onnxruntime
    predictor.predict_one("A wonderful film.")  # Prediction(label='POSITIVE', confidence=..., probabilities=...)

The one inference path: the command line (inference/predict.py), the Streamlit app, the service and the
evaluation scripts all use it, so the figures evaluation reports are the ones users get. What the folder holds
chooses the backend at load, as sentence-transformers does: inference/torch_backend.py for an adapter,
inference/onnx_backend.py for an export. A backend turns texts into token ids and token ids into logits; this
class does the rest, once for both: checking the texts, length-sorted batches, sliding windows, temperature and
labels.

Imports no torch at module level: an export is served where PyTorch is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from inference.int8 import Int8Scheme
from inference.onnx_backend import is_export
from training.device import CPU_BF16_SWITCH, CPU_INT8_SWITCH, bf16_is_fast, cpu_features, int8_is_fast
from training.errors import ModelLoadError
from training.metrics import softmax
from training.paths import DEFAULT_MODEL_DIR
from training.text import Prediction, check_texts, pad_token_ids

PRECISIONS = ("auto", "fp32", "int8", "bf16")
LONG_REVIEW_MODES = ("truncate", "sliding")


def check_long_reviews(mode: str) -> str:
    """`mode` if it is one of LONG_REVIEW_MODES, else one ValueError naming them."""
    if mode not in LONG_REVIEW_MODES:
        raise ValueError(f"Unknown long-review mode '{mode}'; choose from {', '.join(LONG_REVIEW_MODES)}.")
    return mode


def choose_precision(
    precision: str, device, supported: tuple[str, ...] = ("fp32", "bf16", "int8"), scheme: Int8Scheme | None = None
) -> tuple[str, str]:
    """(precision, why): what a model runs in on `device` and the reason, for info() and every benchmark record.

    'auto' is decided by this machine and by measurement: bf16 where the hardware multiplies it (a GPU that
    supports it, a CPU with AMX); on another x86 CPU with AVX2 or VNNI, int8, but only when the model's int8
    scheme passed the gate on its validation reviews and held on the test reviews read once (`scheme`, recorded
    in the folder); exact fp32 elsewhere.
    `supported`: the backend's precisions (an export has no bf16). Figures: docs/speed.md.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}.")
    kind = getattr(device, "type", str(device))
    if precision == "int8" and kind != "cpu":
        # ModelLoadError, not ValueError: the CLIs turn it into one `error:` line instead of a traceback.
        raise ModelLoadError("int8 (dynamic quantization) runs on the CPU only; use --precision bf16 or fp32 on a GPU.")
    if precision != "auto":
        if precision not in supported:
            raise ModelLoadError(
                f"An ONNX export runs in {' or '.join(supported)}, not {precision}: drop --precision, or serve the "
                f"adapter folder for {precision}."
            )
        gate = f"; its int8 scheme: {scheme.summary()}" if precision == "int8" and scheme else ""
        return precision, f"asked for{gate}"
    if kind == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU computes bf16"
        return "fp32", "auto: this GPU has no bf16"
    if kind != "cpu":
        return "fp32", f"auto: exact fp32 on {kind} (faster precisions there are not measured)"
    if "bf16" in supported and bf16_is_fast():
        return "bf16", "auto: this CPU multiplies bf16 in hardware (AMX)"
    why = without_bf16(supported)
    if not int8_is_fast():
        return "fp32", f"{why}, and no AVX2, VNNI or AMX for int8 (or {CPU_INT8_SWITCH}=0): exact fp32"
    if scheme is None or not scheme.gate:
        return "fp32", f"{why}; int8 was never measured for this model (no gate record): exact fp32"
    if not scheme.passed:
        return "fp32", f"{why}; the model's int8 scheme did not pass the gate ({scheme.summary()}): exact fp32"
    if scheme.held is False:
        return "fp32", (
            f"{why}; the model's int8 scheme passed the gate but not the test check ({scheme.check_summary()}): "
            "exact fp32 (--precision int8 serves it)"
        )
    usable = sorted(cpu_features() & set(scheme.instructions))
    if not usable:
        needed = " or ".join(scheme.instructions)
        return "fp32", f"{why}; this int8 computes what its gate measured only with {needed}: exact fp32"
    return "int8", f"{why}; int8 on {', '.join(usable)}, and its scheme {scheme.summary()}"


def without_bf16(supported: tuple[str, ...]) -> str:
    """Why 'auto' did not choose bf16 on a CPU, as the start of its reason."""
    if "bf16" not in supported:
        return "auto: an export has no bf16 graph"
    if os.environ.get(CPU_BF16_SWITCH, "").strip() == "0":
        return f"auto: {CPU_BF16_SWITCH}=0 (as on a CPU without AMX)"
    return "auto: no AMX for bf16"


def resolve_precision(precision: str, device, scheme: Int8Scheme | None = None) -> str:
    """choose_precision's precision alone (the backend's full set: fp32, bf16, int8)."""
    return choose_precision(precision, device, scheme=scheme)[0]


class Predictor:
    """A model loaded once through a backend; predicts one review or many in length-sorted batches.

    `precision`: how the model runs ("auto": see choose_precision; "fp32": exact everywhere).
    `temperature`: logits are divided by it before the softmax (1.0 = uncalibrated).
    `long_reviews`: "truncate" keeps the head and tail the adapter was trained with; "sliding" reads
    the whole review in overlapping windows and averages their logits.
    """

    def __init__(
        self, backend, temperature: float = 1.0, long_reviews: str = "truncate", precision_reason: str = "asked for"
    ):
        check_long_reviews(long_reviews)
        self.backend, self.temperature, self.long_reviews = backend, float(temperature), long_reviews
        self.precision_reason = precision_reason

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        device: str | None = None,
        precision: str = "auto",
        calibrated: bool = True,
        long_reviews: str = "truncate",
        trust_pickle: bool = False,
        allow_hub_base: bool = False,
        threads: int | None = None,
    ) -> Predictor:
        """An adapter folder (PyTorch) or an ONNX export (onnxruntime), by what `model_dir` holds.

        `trust_pickle`: also load a pickle (.bin) adapter, which can run code when loaded. `allow_hub_base`: let
        the adapter name a base on the Hugging Face Hub other than the project's own (see load_classifier).
        `threads`: CPU threads (onnxruntime's for an export; PyTorch's, for the whole process, for an adapter)."""
        model_dir = Path(model_dir)
        check_long_reviews(long_reviews)
        if is_export(model_dir):
            from inference.onnx_backend import OnnxBackend as Backend
        else:
            from inference.torch_backend import TorchBackend as Backend
        device = Backend.device_for(device)
        scheme = Backend.int8_scheme(model_dir) if precision in ("auto", "int8") else None  # fp32 never reads it
        precision, reason = choose_precision(precision, device, Backend.precisions, scheme)
        backend = Backend.load(
            model_dir,
            device,
            precision,
            scheme=scheme,
            trust_pickle=trust_pickle,
            allow_hub_base=allow_hub_base,
            threads=threads,
        )
        return cls(backend, backend.temperature if calibrated else 1.0, long_reviews, reason)

    def with_long_reviews(self, mode: str) -> Predictor:
        """The same loaded model reading long reviews another way ("truncate" or "sliding"): no second load."""
        return Predictor(self.backend, self.temperature, mode, self.precision_reason)

    # What the backend holds, under the names the rest of the project reads.
    labels = property(lambda self: tuple(self.backend.config.labels))
    config = property(lambda self: self.backend.config)
    precision = property(lambda self: self.backend.precision)
    device = property(lambda self: self.backend.device)
    device_name = property(lambda self: self.backend.device_name)
    model_dir = property(lambda self: self.backend.folder)
    tokenizer = property(lambda self: self.backend.tokenizer)

    @property
    def model(self):
        """The PyTorch model (the PyTorch backend only: explanations and profiling take it)."""
        if self.backend.name != "pytorch":
            raise AttributeError(f"A Predictor on {self.backend.name} has no PyTorch model; load the adapter folder.")
        return self.backend.model

    def info(self) -> dict:
        """What is loaded: base model, folder, backend, device, precision and why, settings and recorded metrics."""
        config = self.backend.config
        return {
            "base_model": config.base_model,
            "adapter": str(self.model_dir),
            "backend": self.backend.name,
            "device": self.device_name,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "temperature": self.temperature,
            "long_reviews": self.long_reviews,
            "max_length": config.max_length,
            "truncation": config.truncation,
            "lora": config.lora,
            "metrics": self.backend.metrics,
            **self.backend.details(),
        }

    def explain(self, text: str, n_steps: int = 50, tokens_per_pass: int | None = None):
        """Which words pushed this prediction towards each label: an `inference.explain.Explanation`.
        `tokens_per_pass`: a smaller working set for the gradients (None: inference.explain's default)."""
        if self.backend.name != "pytorch":
            raise ModelLoadError(
                "Explanations need PyTorch and the adapter (Integrated Gradients): load the adapter folder, "
                "e.g. --model trained_model, not an ONNX export."
            )
        from inference.explain import explain  # imported here: captum loads only when explaining

        options = {} if tokens_per_pass is None else {"tokens_per_pass": tokens_per_pass}
        return explain(self, text, n_steps=n_steps, **options)

    # ------------------------------------------------------------------------- predicting

    def predict_logits(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Raw logits (before temperature), shape (len(texts), len(labels)). Raises EmptyTextError for a blank text."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
        texts = list(texts)
        check_texts(texts)
        token_ids, owner = self.backend.encode(texts, self.long_reviews)
        window_logits = self._forward(token_ids, batch_size, progress)
        # Each review's logits: the mean over its windows (exactly its one row when truncating).
        logits = np.zeros((len(texts), window_logits.shape[1]))
        np.add.at(logits, owner, window_logits)
        return logits / np.bincount(owner, minlength=len(texts))[:, None]

    def predict_proba(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), calibrated by the temperature."""
        return softmax(self.predict_logits(texts, batch_size, progress) / self.temperature)

    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[Prediction]:
        probabilities = self.predict_proba(texts, batch_size=batch_size, progress=progress)
        return [self._prediction(row) for row in probabilities]

    def predict_one(self, text: str) -> Prediction:
        return self.predict([text])[0]

    def _prediction(self, row: np.ndarray) -> Prediction:
        best = int(row.argmax())
        return Prediction(
            label=self.labels[best],
            confidence=float(row[best]),
            probabilities={label: float(p) for label, p in zip(self.labels, row)},
        )

    def _forward(self, token_ids: list[list[int]], batch_size: int, progress: bool) -> np.ndarray:
        """Logits for already-encoded inputs, run longest first so each batch pads to similar lengths."""
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        logits = np.empty((len(token_ids), len(self.labels)), dtype=np.float64)
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm  # optional: only for a progress bar

            batches = tqdm(batches, desc="Predicting", unit="batch")
        backend = self.backend
        for start in batches:
            chosen = order[start : start + batch_size]
            batch = pad_token_ids(
                [token_ids[i] for i in chosen], backend.pad_id, backend.length_multiple, cap=self.config.max_length
            )
            logits[chosen] = backend.logits(batch)
        return logits
