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

import dataclasses
import json
from pathlib import Path

import torch

from training import storage
from training.adapter_config import (
    check_base_allowed,
    check_rank,
    check_stored_keys,
    load_adapter_tokenizer,
    lora_config_for,
    read_adapter_record,
    read_json_object,
    safetensors_shapes,
)
from training.base import load_base_classifier, quiet_loading
from training.errors import ModelLoadError
from training.text import BINARY_LABELS

LABELS = BINARY_LABELS  # the default: an adapter trained on 0/1 labels, or one saved before labels were recorded
ID2LABEL = dict(enumerate(LABELS))
LABEL2ID = {label: index for index, label in ID2LABEL.items()}


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
        data = read_json_object(folder / SENTIMENT_CONFIG_FILE)  # bounded: an adapter folder is untrusted
        data["labels"] = tuple(data.get("labels", LABELS))
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


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


# PEFT's sequence-classification model adds these to modules_to_save itself, so every saved adapter lists them.
PEFT_HEAD_NAMES = ("classifier", "score")


def known_target_modules(base) -> list:
    """Every target_modules value this project's training can have written for `base`'s architecture: the only
    values an adapter loaded on it may hold (lora_config_for compares them, never matches them)."""
    known = ["all-linear"]
    for targets in LORA_TARGET_CHOICES:
        try:
            known.append(lora_target_modules(base.config.model_type, targets))
        except ValueError:  # no attention-only targets are known for this architecture
            continue
    if base.config.model_type not in LORA_TARGETS:
        # PEFT saves "all-linear" resolved to the names of the layers it chose; its own function resolves it
        # the same way here (private, but the one that defines what "all-linear" meant at training).
        from peft import LoraConfig, TaskType
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

        every_linear = LoraConfig(task_type=TaskType.SEQ_CLS, target_modules="all-linear")
        known.append(sorted(_maybe_include_all_linear_layers(every_linear, base).target_modules))
    return known


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
        calibration = json.loads(path.read_text(encoding="utf-8"))
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


def check_adapter_fits_base(
    folder: Path, shapes: dict[str, tuple[int, ...]], base, config: SentimentConfig, trained_on: str | None
) -> None:
    """Every LoRA matrix and head weight (`shapes`: the stored shapes, read before any weight loads) must fit the
    loaded base's layers: a misfit means the adapter was trained on another base."""
    parameters = dict(base.named_parameters())
    for key, shape in shapes.items():
        name = key.removeprefix("base_model.model.")
        for suffix, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):  # A: (rank, in), B: (out, rank)
            if name.endswith(suffix):
                target = parameters.get(name.removesuffix(suffix) + ".weight")
                fits = target is not None and target.ndim == 2 and len(shape) == 2 and target.shape[axis] == shape[axis]
                break
        else:  # a weight kept whole (the head): same name, same shape; any other key fails check_stored_keys
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


def stored_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The adapter's weights as saved: safetensors, or (only once check_adapter_folder has let a trusted pickle
    through) adapter_model.bin, read with torch's restricted unpickler and memory-mapped until used."""
    if (folder / ADAPTER_WEIGHTS_FILE).exists():
        from safetensors.torch import load_file

        return load_file(folder / ADAPTER_WEIGHTS_FILE)
    return torch.load(folder / PICKLE_WEIGHTS_FILE, map_location="cpu", weights_only=True, mmap=True)


def stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Each stored weight's shape; for safetensors from the header alone, before anything is allocated."""
    if (folder / ADAPTER_WEIGHTS_FILE).exists():
        return safetensors_shapes(folder / ADAPTER_WEIGHTS_FILE)
    return {key: tuple(value.shape) for key, value in stored_weights(folder).items()}


def load_classifier(
    folder: str | Path,
    device: torch.device | str = "cpu",
    merge: bool = True,
    trust_pickle: bool = False,
    allow_hub_base: bool = False,
):
    """Load base + adapter + head from an adapter folder for inference.

    Returns (model, tokenizer, config). With `merge`, the LoRA weights are folded into the base
    weights: the same function, one matrix product per layer instead of three. `trust_pickle` allows
    an adapter saved as pickle (.bin), which can run code when loaded: only for files you trust.
    `allow_hub_base` lets the folder name a base on the Hugging Face Hub other than the project's own.

    The folder is untrusted: PEFT never reads it. Its configs are checked field by field and the LoRA
    config rebuilt from this project's values (training.adapter_config), its shapes are checked against
    the base before anything is allocated, and only then are the weights copied in.
    """
    folder = Path(folder)
    check_adapter_folder(folder, trust_pickle)
    try:
        config = SentimentConfig.load(folder)
        check_base_allowed(config.base_model, allow_hub_base, folder / SENTIMENT_CONFIG_FILE)
        record = read_adapter_record(folder / ADAPTER_CONFIG_FILE)
        check_same_base(folder, config, record.trained_on)
        shapes = stored_shapes(folder)
        check_rank(record, shapes)
        tokenizer = load_adapter_tokenizer(folder)
    except ModelLoadError:
        raise
    except Exception as error:  # json, safetensors, pickle and the tokenizer each raise their own types
        raise ModelLoadError(
            f"The adapter at {folder} is corrupt ({type(error).__name__}: {error}). Retrain it or restore it."
        ) from error
    base = load_base_classifier(config.base_model, labels=config.labels)
    from peft import PeftModelForSequenceClassification  # imported here: a refused folder never waits for PEFT
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    try:
        check_adapter_fits_base(folder, shapes, base, config, record.trained_on)
        lora = lora_config_for(record, known_target_modules(base), [*head_modules(base), *PEFT_HEAD_NAMES])
        with quiet_loading():
            model = PeftModelForSequenceClassification(base, lora)
        expected = get_peft_model_state_dict(model, save_embedding_layers=False)
        check_stored_keys(folder, set(shapes), set(expected))
        set_peft_model_state_dict(model, stored_weights(folder))
    except ModelLoadError:
        raise
    except Exception as error:  # safetensors and PEFT raise their own types for a damaged file
        raise ModelLoadError(
            f"The adapter at {folder} is corrupt ({type(error).__name__}: {error}). Retrain it or restore it."
        ) from error
    if merge:
        model = model.merge_and_unload()
    model.eval().to(device)
    return model, tokenizer, config
