"""The PyTorch backend of `inference.predictor.Predictor`: base model + adapter, merged, on a CPU or a GPU, in
fp32, bf16 or dynamic int8.

The backend tokenizes and runs the model; the Predictor does everything else (batching, windows, temperature,
labels). It is the one backend that can explain a prediction (gradients) and run on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inference.int8 import DEFAULT_KEEP_FP32, Int8Scheme, linear_role, read_int8_schemes
from training.device import describe_device, pick_device
from training.model import SentimentConfig, load_classifier, read_calibration, read_metrics
from training.text import CPU_LENGTH_MULTIPLE, GPU_LENGTH_MULTIPLE, encode_texts, encode_windows


def int8_linears(model, keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32) -> list[str]:
    """The Linear modules int8 quantizes: every one whose role (inference.int8.linear_role) is not in `keep_fp32`."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and linear_role(name) not in keep_fp32
    ]


def quantize_int8(model, keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32, names: list[str] | None = None):
    """Dynamic int8 quantization of the encoder's Linear layers, per output channel, on the CPU, in place.

    Weights are stored as int8 with one scale per output row; activations are quantized on the fly, per batch,
    to 7 bits (fbgemm's reduce_range), so AVX2, VNNI and AMX machines compute the same integers. `keep_fp32`
    names the roles left exact (the head by default; a measured scheme adds the layers that moved labels);
    `names` picks the modules directly instead (scripts/precision_check.py's scan, one at a time).
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    chosen = int8_linears(model, keep_fp32) if names is None else names
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            model, dict.fromkeys(chosen, per_channel_dynamic_qconfig), dtype=torch.qint8, inplace=True
        )


class TorchBackend:
    """A merged classifier and its tokenizer on one device: token ids in, logits out."""

    name = "pytorch"
    precisions = ("fp32", "bf16", "int8")

    def __init__(
        self,
        model,
        tokenizer,
        config: SentimentConfig,
        device: torch.device,
        folder: Path,
        precision: str = "fp32",
        scheme: Int8Scheme | None = None,
        trust_pickle: bool = False,
        allow_hub_base: bool = False,
    ):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device, self.folder, self.precision = device, Path(folder), precision
        self.scheme = scheme  # the int8 scheme the model was quantized by (None: fp32, bf16, or the head-only default)
        self.trust_pickle, self.allow_hub_base = trust_pickle, allow_hub_base  # what the user allowed this folder

    def load_fp32(self):
        """The same merged adapter once more in full precision (explanations take gradients through it), loaded
        with what the user allowed for this folder, no more."""
        model, _, _ = load_classifier(
            self.folder,
            device=self.device,
            merge=True,
            trust_pickle=self.trust_pickle,
            allow_hub_base=self.allow_hub_base,
        )
        return model

    @staticmethod
    def device_for(requested: str | None) -> torch.device:
        return pick_device(requested)

    @staticmethod
    def int8_scheme(folder: Path) -> Int8Scheme | None:
        return read_int8_schemes(folder).get("pytorch")

    @classmethod
    def load(
        cls,
        folder: Path,
        device: torch.device,
        precision: str,
        scheme: Int8Scheme | None = None,
        trust_pickle: bool = False,
        allow_hub_base: bool = False,
        threads: int | None = None,
    ) -> TorchBackend:
        """Load and merge the adapter, then cast (bf16) or quantize (int8, by `scheme`: the head alone kept in fp32
        without one). `threads`: PyTorch's CPU threads, a setting of the whole process (None: leave it)."""
        if threads is not None:
            torch.set_num_threads(threads)
        model, tokenizer, config = load_classifier(
            Path(folder), device=device, merge=True, trust_pickle=trust_pickle, allow_hub_base=allow_hub_base
        )
        if precision == "int8":
            model = quantize_int8(model, scheme.keep_fp32 if scheme else DEFAULT_KEEP_FP32)
        elif precision == "bf16":
            model = model.to(torch.bfloat16)
        scheme = scheme if precision == "int8" else None
        return cls(model, tokenizer, config, device, folder, precision, scheme, trust_pickle, allow_hub_base)

    @property
    def temperature(self) -> float:
        return float(read_calibration(self.folder).get("temperature", 1.0))

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def length_multiple(self) -> int | None:
        if self.device.type == "cuda":
            return GPU_LENGTH_MULTIPLE
        # Dynamic int8 takes one scale over the whole batch, padding included, and its gate and check were
        # measured on unpadded batches: int8 batches stay as they were measured.
        return None if self.precision == "int8" else CPU_LENGTH_MULTIPLE

    @property
    def device_name(self) -> str:
        return describe_device(self.device)

    @property
    def metrics(self) -> dict:
        return read_metrics(self.folder)

    def encode(self, texts: list[str], long_reviews: str) -> tuple[list[list[int]], list[int]]:
        if long_reviews == "sliding":
            return encode_windows(self.tokenizer, texts, self.config.max_length)
        return encode_texts(self.tokenizer, texts, self.config.max_length, self.config.truncation), list(
            range(len(texts))
        )

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {key: torch.from_numpy(value).to(self.device) for key, value in batch.items()}
            return self.model(**inputs).logits.double().cpu().numpy()

    def details(self) -> dict:
        """What info() adds for this backend: the library version, and the int8 scheme when quantized."""
        if self.precision != "int8":
            return {"torch": torch.__version__}
        scheme = self.scheme or Int8Scheme("pytorch")  # no record: the head alone in fp32, never gated
        return {"torch": torch.__version__, "int8": scheme.as_dict()}
