"""`Predictor`: a trained LoRA adapter loaded once, predicting the sentiment of movie reviews.

    from inference.predictor import Predictor
    predictor = Predictor.from_pretrained("trained_model")
    predictor.predict_one("A wonderful film.")  # Prediction(label='POSITIVE', confidence=..., probabilities=...)

The one inference path: the command line (inference/predict.py), the Streamlit app and the evaluation
scripts all use it, so the figures evaluation reports are the ones users get.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inference.scoring import Scoring
from training.data import encode_texts, encode_windows
from training.model import (
    ModelLoadError,
    SentimentConfig,
    bf16_is_fast,
    describe_device,
    load_classifier,
    pick_device,
    read_calibration,
    read_metrics,
)
from training.paths import DEFAULT_MODEL_DIR
from training.text import GPU_LENGTH_MULTIPLE, pad_token_ids

# Re-exported: the command line, the app and the tests import these from here.
from training.text import UNCERTAIN as UNCERTAIN
from training.text import EmptyTextError as EmptyTextError
from training.text import Prediction as Prediction
from training.text import TextError as TextError
from training.text import is_unicode_text as is_unicode_text

PRECISIONS = ("auto", "fp32", "int8", "bf16")
LONG_REVIEW_MODES = ("truncate", "sliding")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' means bf16 where the hardware multiplies it (a GPU that supports it, a CPU with AMX) and exact
    fp32 elsewhere; int8 is an opt-in for CPU speed.

    bf16 changed no label of 1,000 reviews against fp32; int8 is not a default because it costs more
    accuracy than this project allows a speed-up (figures: docs/speed.md).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if device.type == "cpu":
            return "bf16" if bf16_is_fast() else "fp32"
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "int8" and device.type != "cpu":
        # ModelLoadError, not ValueError: the CLIs turn it into one `error:` line instead of a traceback.
        raise ModelLoadError("int8 (dynamic quantization) runs on the CPU only; use --precision bf16 or fp32 on a GPU.")
    return precision


# Layers int8 never touches: the small head decides the label and costs nothing.
INT8_KEEP_EXACT = ("classifier", "pooler")


def quantize_int8(model, keep_exact: tuple[str, ...] = INT8_KEEP_EXACT):
    """Dynamic int8 quantization of the encoder's Linear layers, per output channel, on the CPU.

    Weights are stored as int8 with one scale per output row; activations are quantized on the fly.
    The small head stays fp32: it decides the label, costs nothing, and per-tensor int8 there
    flipped borderline reviews in our measurements.
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(part in name for part in keep_exact)
    }
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


class Predictor(Scoring):
    """Base model + adapter loaded once; predicts one review or many in length-sorted batches.

    `precision`: how the model runs ("auto": bf16 on a GPU or an AMX CPU, else fp32; "int8": faster on the CPU,
    less accurate).
    `temperature`: logits are divided by it before the softmax (1.0 = uncalibrated).
    `long_reviews`: "truncate" keeps the head and tail the adapter was trained with; "sliding" reads
    the whole review in overlapping windows and averages their logits.
    """

    def __init__(
        self,
        model,
        tokenizer,
        config: SentimentConfig,
        device: torch.device,
        model_dir: Path,
        precision: str = "fp32",
        temperature: float = 1.0,
        long_reviews: str = "truncate",
    ):
        if long_reviews not in LONG_REVIEW_MODES:
            raise ValueError(f"Unknown long-review mode '{long_reviews}'; choose from {', '.join(LONG_REVIEW_MODES)}.")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device, self.model_dir = device, model_dir
        self.precision, self.temperature, self.long_reviews = precision, float(temperature), long_reviews

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        device: str | None = None,
        precision: str = "auto",
        calibrated: bool = True,
        long_reviews: str = "truncate",
        trust_pickle: bool = False,
    ) -> Predictor:
        """`trust_pickle`: also load a pickle (.bin) adapter, which can run code when loaded."""
        device = pick_device(device)
        precision = resolve_precision(precision, device)
        model, tokenizer, config = load_classifier(
            Path(model_dir), device=device, merge=True, trust_pickle=trust_pickle
        )
        if precision == "int8":
            model = quantize_int8(model)
        elif precision == "bf16":
            model = model.to(torch.bfloat16)
        temperature = read_calibration(Path(model_dir)).get("temperature", 1.0) if calibrated else 1.0
        return cls(model, tokenizer, config, device, Path(model_dir), precision, temperature, long_reviews)

    def with_long_reviews(self, mode: str) -> Predictor:
        """The same loaded model reading long reviews another way ("truncate" or "sliding"): no second load."""
        return Predictor(
            self.model, self.tokenizer, self.config, self.device, self.model_dir, self.precision, self.temperature, mode
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    @property
    def device_name(self) -> str:
        return describe_device(self.device)

    def info(self) -> dict:
        """What is loaded: base model, adapter folder, device, settings and the metrics recorded with it."""
        return {
            "base_model": self.config.base_model,
            "adapter": str(self.model_dir),
            "device": self.device_name,
            "precision": self.precision,
            "temperature": self.temperature,
            "long_reviews": self.long_reviews,
            "max_length": self.config.max_length,
            "truncation": self.config.truncation,
            "lora": self.config.lora,
            "metrics": read_metrics(self.model_dir),
        }

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        if self.long_reviews == "sliding":
            return encode_windows(self.tokenizer, texts, self.config.max_length)
        return encode_texts(self.tokenizer, texts, self.config.max_length, self.config.truncation), list(
            range(len(texts))
        )

    def explain(self, text: str, n_steps: int = 50, tokens_per_pass: int | None = None):
        """Which words pushed this prediction towards each label: an `inference.explain.Explanation`.
        `tokens_per_pass`: a smaller working set for the gradients (None: inference.explain's default)."""
        from inference.explain import explain  # imported here: captum loads only when explaining

        options = {} if tokens_per_pass is None else {"tokens_per_pass": tokens_per_pass}
        return explain(self, text, n_steps=n_steps, **options)

    def _forward(self, token_ids: list[list[int]], batch_size: int, progress: bool) -> np.ndarray:
        """Logits for already-encoded inputs, run longest first so each batch pads to similar lengths."""
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        logits = np.empty((len(token_ids), len(self.labels)), dtype=np.float64)
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Predicting", unit="batch")
        multiple = GPU_LENGTH_MULTIPLE if self.device.type == "cuda" else None  # on a CPU padding only costs
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            for start in batches:
                chosen = order[start : start + batch_size]
                batch = pad_token_ids([token_ids[i] for i in chosen], pad_id, multiple, cap=self.config.max_length)
                output = self.model(
                    **{key: torch.from_numpy(value).to(self.device) for key, value in batch.items()}
                ).logits
                logits[chosen] = output.double().cpu().numpy()
        return logits


def probability_column(label: str) -> str:
    """The batch-scoring column holding a label's probability: p_negative, p_positive, p_neutral, ..."""
    return f"p_{label.lower()}"


def predict_table(
    predictor: Predictor, texts: list[str], batch_size: int, progress: bool, uncertain_below: float | None = None
) -> list[dict]:
    """One result row per text, in order: the top label, its confidence, one probability column per label
    (probability_column) and, with `uncertain_below`, a `verdict` (the label or UNCERTAIN). Empty texts are
    flagged, not dropped. `predictor` is a Predictor or an OnnxPredictor."""
    filled = [i for i, text in enumerate(texts) if text.strip()]
    predictions = predictor.predict([texts[i] for i in filled], batch_size, progress) if filled else []
    verdict = {} if uncertain_below is None else {"verdict": ""}
    rows = [{"predicted_label": "", "confidence": None, **verdict, "error": "empty text"} for _ in texts]
    for index, prediction in zip(filled, predictions):
        rows[index] = {
            "predicted_label": prediction.label,
            "confidence": round(prediction.confidence, 6),
            **({} if uncertain_below is None else {"verdict": prediction.verdict(uncertain_below)}),
            **{probability_column(label): round(p, 6) for label, p in prediction.probabilities.items()},
            "error": "",
        }
    return rows
