"""Fine-tune a pretrained encoder with LoRA on IMDb reviews (Hugging Face Trainer).

    python training/train.py --recipe training/recipes/minilm-imdb.json      # the shipped adapter's recipe
    python training/train.py --base-model minilm --data ../shared/data/imdb --train-limit 2000

The best checkpoint on a validation split carved from the training data is written, with its
tokenizer, config and validation metrics, to trained_model/ (or --output-dir). The folder is only
replaced once the new adapter is complete, so a failed or interrupted run leaves the old one intact.
Several GPUs or nodes: `accelerate launch training/train.py ...` (see the README).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from training import data, failures, storage
from training.base import load_base_config, load_tokenizer, portable_base_id
from training.config import TrainConfig, installed, parse_args, portable_settings, reproducing_command
from training.cpu_training import use_cheap_dropout
from training.device import bf16_is_fast
from training.errors import DataError, ModelLoadError
from training.metrics import calibration_record, classification_metrics, softmax
from training.model import SentimentConfig, build_classifier, save_adapter, write_calibration
from training.model_card import scored_with, write_model_card
from training.text import GPU_LENGTH_MULTIPLE, encode_texts

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
    # On a GPU, few distinct shapes: each new one costs a kernel plan (see GPU_LENGTH_MULTIPLE).
    multiple = GPU_LENGTH_MULTIPLE if torch.cuda.is_available() else None
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
    """The Trainer's `compute_loss_func`: cross-entropy with one weight per label, summed and divided by the number
    of reviews the optimizer step sees.

    The Trainer passes that count as `num_items_in_batch` (every accumulated batch, on every process) and then
    neither divides a custom loss by the accumulation steps nor leaves it alone across processes: it multiplies
    it by the number of processes. Dividing by the step's count makes one step's gradient the same with any
    accumulation or process count; a weighted mean per batch (PyTorch's `weight=`) would be multiplied by N
    under `accelerate launch --num_processes N`. With balanced weights the mean weight over the data is 1, so
    the loss has the scale of the unweighted one."""

    def __init__(self, weights: list[float]):
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()  # (batch, labels)
        per_review = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        weighted = (self.weights.to(logits.device)[labels] * per_review).sum()
        return weighted / (len(labels) if num_items_in_batch is None else num_items_in_batch)


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
        raise DataError(f"--max-length {max_length} exceeds what the base model supports ({supported}).")


# ----------------------------------------------------------------------------- main


def main(config: TrainConfig) -> dict:
    """Train, select the best checkpoint on validation, publish the adapter; returns the run's summary."""
    from transformers import Trainer, set_seed

    problems = config.problems()
    if problems:
        raise DataError("Invalid settings:\n  - " + "\n  - ".join(problems))
    results_dir = Path(config.results_dir)
    resume = _last_checkpoint(results_dir) if config.resume else None
    if config.resume and resume is None:
        raise DataError(f"--resume: no checkpoint in {results_dir}. Run without --resume to start afresh.")
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
        ids = encode_texts(tokenizer, frame["text"].tolist(), config.max_length, config.truncation)
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
    precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"  # as training_arguments chose
    # Raw softmax (T = 1) under the training precision; `epoch` (added by trainer.log) is where training stopped.
    validation.update(scored_with(1.0, precision), best_epoch=best_epoch(trainer.state))

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
        "precision": precision,
        "output_dir": str(config.output_dir),
    }
    if trainer.is_world_process_zero():  # under accelerate launch, only one process writes
        write_outputs(trainer.model, tokenizer, config, summary)
    return summary


def best_epoch(state) -> float | None:
    """The epoch of the checkpoint load_best_model_at_end kept, from the Trainer's log of validations."""
    if not state.best_model_checkpoint:
        return None
    step = int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])  # checkpoint-<step>
    return next(
        (entry["epoch"] for entry in state.log_history if entry.get("step") == step and "eval_accuracy" in entry), None
    )


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


def report_to(choice: str) -> list[str] | str:
    """TrainingArguments.report_to for --report-to: tensorboard (the default) only where it is installed."""
    if choice == "none" or (choice == "tensorboard" and not installed("tensorboard")):
        return "none"
    return [choice]


def cli(argv: list[str] | None = None) -> int:
    try:
        summary = main(parse_args(argv))
    except (DataError, ModelLoadError, storage.PublishError) as error:
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
