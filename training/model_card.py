"""The adapter's README.md as a Hugging Face model card, written from the adapter's own records.

training/train.py writes it when it publishes an adapter; evaluation/evaluate.py --record writes it again
with the test metrics and plots. Every statement comes from a file in the folder: sentiment_config.json
(base, labels, input, LoRA, the run's settings and command, and any field filled in after the run, marked
as such), metrics.json (validation and test figures, each with the temperature and precision its
probabilities were made with, data sizes, reviews per label, hardware and time) and calibration.json. A card
this module did not write (it lacks GENERATED_MARK) is never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from training import storage
from training.data import HUB_DATASET
from training.model import SentimentConfig, read_calibration, read_metrics

CARD_FILE = "README.md"
# What no record can say (intended use, limitations, licenses, how the recipe was chosen), written by hand
# beside the records; the card includes it as it is.
NOTES_FILE = "card_notes.md"
GENERATED_MARK = "<!-- Written by training/model_card.py from this folder's records; rewritten on each run. -->"
# The IMDb copy beside the checkout, as training records it. Its README.md: the v1.0 release's files as parquet
# (ratings and ids from the file names), the same reviews as the hub's stanfordnlp/imdb.
LOCAL_IMDB_COPY = "../shared/data/imdb"
IMDB_RELEASE = "https://ai.stanford.edu/~amaas/data/sentiment/"
# (metrics.json key, model-index type, label in the card); F1, precision and recall are macro with more than two labels.
HEADLINE = (
    ("accuracy", "accuracy", "accuracy"),
    ("f1", "f1", "F1"),
    ("precision", "precision", "precision"),
    ("recall", "recall", "recall"),
    ("roc_auc", "roc_auc", "ROC-AUC"),
    ("log_loss", "log_loss", "log loss"),
    ("expected_calibration_error", "ece", "expected calibration error"),
)


def scored_with(temperature: float, precision: str) -> dict:
    """What every metrics block carries to say how its probabilities were made: softmax(logits / temperature)
    from the model run in `precision` (fp32, bf16, int8). Named numeric_precision because `precision` in a
    metrics block is the classification metric."""
    return {"temperature": float(temperature), "numeric_precision": precision}


def is_generated(folder: Path) -> bool:
    """Whether the folder's card is missing or was written here (and may be rewritten)."""
    path = Path(folder) / CARD_FILE
    return not path.exists() or GENERATED_MARK in path.read_text(encoding="utf-8", errors="replace")


def write_model_card(
    folder: str | Path, plots: dict[str, str] | None = None, name: str | None = None, replace: bool = False
) -> bool:
    """(Re)write the folder's README.md from its records; returns False, writing nothing, for a card made by hand.

    `plots`: {name: path relative to the folder} of evaluation plots to show (evaluate.py --record).
    `name`: the model's name in the card (default: the folder's). `replace`: overwrite whatever card is
    there (training does, over the boilerplate card PEFT's save_pretrained leaves)."""
    folder = Path(folder)
    if not replace and not is_generated(folder):
        return False
    storage.write_bytes(folder / CARD_FILE, model_card(folder, plots, name).encode("utf-8"))
    return True


# The evaluation plots evaluate.py --record copies into the folder's evaluation/, in the order the card shows them.
PLOT_ORDER = ("confusion_matrix", "roc_curve", "reliability_diagram")


def folder_plots(folder: Path) -> dict[str, str]:
    """{name: path relative to the folder} of the evaluation plots the folder holds, so the card can be written
    again from the folder alone."""
    found = {path.stem: path for path in sorted((Path(folder) / "evaluation").glob("*.png"))}
    ordered = [stem for stem in PLOT_ORDER if stem in found] + sorted(set(found) - set(PLOT_ORDER))
    return {stem.replace("_", " "): f"evaluation/{found[stem].name}" for stem in ordered}


def model_card(folder: Path, plots: dict[str, str] | None = None, name: str | None = None) -> str:
    """The card for `folder`, from its records; `plots` default to those in its evaluation/ folder."""
    import yaml

    plots = folder_plots(folder) if plots is None else plots

    config = SentimentConfig.load(folder)
    metrics, calibration = read_metrics(folder), read_calibration(folder)
    training = config.training
    run = metrics.get("training", {})
    labels = list(config.labels)
    binary = len(labels) == 2
    data_source = str(training.get("data", "unknown"))
    # The IMDb copy beside the checkout is named by its hub id; it is described in the Data table.
    dataset_id = HUB_DATASET if data_source in ("hub", LOCAL_IMDB_COPY) else data_source
    front = {
        "library_name": "peft",
        "base_model": config.base_model,
        "pipeline_tag": "text-classification",
        "tags": ["lora", "text-classification"],
        "datasets": [dataset_id],
        "model-index": [
            {
                "name": name or folder.resolve().name,
                "results": [
                    _model_index_result(metrics[split], dataset_id, split, binary)
                    for split in ("validation", "test")
                    if isinstance(metrics.get(split), dict)
                ],
            }
        ],
    }
    averaged = "" if binary else " (macro average over the labels)"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        GENERATED_MARK,
        "",
        f"# LoRA text classifier on {config.base_model}",
        "",
        f"A LoRA adapter and a {len(labels)}-label classification head on `{config.base_model}`, trained by this "
        f"project's `training/train.py`. Labels, in output order: {', '.join(f'`{label}`' for label in labels)}.",
        "",
        "## Labels",
        "",
        "| id | label | training reviews |",
        "| --- | --- | --- |",
        *(
            f"| {index} | {label} | {run.get('label_counts', {}).get(label, 'not recorded')} |"
            for index, label in enumerate(labels)
        ),
        "",
        "(Reviews per label in the training data before the validation split was carved out.)",
        "",
        "## Data",
        "",
        "| | |",
        "| --- | --- |",
        f"| source | {_data_source(data_source)} (text column `{training.get('text_column', 'text')}`, label column "
        f"`{training.get('label_column', 'label')}`) |",
        f"| training reviews | {run.get('num_train_examples', 'not recorded')} |",
        f"| validation reviews | {run.get('num_validation_examples', 'not recorded')} (a stratified "
        f"{training.get('validation_fraction', '?')} of the training data, seed {training.get('seed', '?')}; "
        f"limits: train {training.get('train_limit')}, validation {training.get('validation_limit')}) |",
        "",
        "## Recipe",
        "",
        "```bash",
        str(training.get("command", "python training/train.py (command not recorded)")),
        "```",
        "",
        *_filled_in_later(training.get("filled_in_later")),
        "| | |",
        "| --- | --- |",
        f"| input | at most {config.max_length} tokens, `{config.truncation}` truncation |",
        f"| LoRA | r={config.lora.get('rank')}, alpha={config.lora.get('alpha')}, dropout {config.lora.get('dropout')}, "
        f"targets `{config.lora.get('targets')}`; head trained in full |",
        f"| optimisation | learning rate {training.get('learning_rate')}, {training.get('epochs')} epochs "
        f"(max steps {training.get('max_steps')}), batch {training.get('batch_size')}, weight decay "
        f"{training.get('weight_decay')}, warm-up {training.get('warmup_fraction')}, seed {training.get('seed')} |",
        f"| class weights | {_class_weights(run)} |",
        f"| hardware and time | {run.get('device', 'not recorded')}: {run.get('train_runtime_s', '?')} s "
        f"({run.get('train_samples_per_second', '?')} training samples/s in the Trainer) |",
        "",
        "## Metrics",
        "",
        f"Precision, recall and F1{averaged if not binary else ' of ' + labels[1]}; ROC-AUC "
        + ("ranks by the second label's probability." if binary else "one-vs-rest, macro-averaged.")
        + " T: the temperature the row's probabilities were scaled by, softmax(logits / T) (1: the raw softmax); "
        "run in: the precision the model computed in. A temperature changes no label, only calibration error and "
        "log loss.",
        "",
        "| split | reviews | " + " | ".join(name for _, _, name in HEADLINE) + " | T | run in |",
        "| --- | --- | " + " | ".join("---" for _ in HEADLINE) + " | --- | --- |",
    ]
    for split in ("validation", "test"):
        figures = metrics.get(split)
        if isinstance(figures, dict):
            lines.append(f"| {split} | {figures.get('num_examples', '?')} | " + " | ".join(_row(figures)) + " |")
    test = metrics.get("test")
    if isinstance(test, dict) and isinstance(test.get("uncalibrated"), dict):
        raw = test["uncalibrated"]
        lines += [
            "",
            f"Test, raw softmax (T = 1): calibration error {_number(raw.get('expected_calibration_error'))}, "
            f"log loss {_number(raw.get('log_loss'))}.",
        ]
    if isinstance(test, dict) and isinstance(test.get("data"), dict):
        data, run = test["data"], test.get("run", {})
        lines += [
            "",
            f"Test data: `{data.get('source')}` split `{data.get('split')}`, limit {data.get('limit')}, "
            f"seed {data.get('seed')}; measured on {run.get('machine', 'a machine not recorded')}, "
            f"{run.get('date', 'date not recorded')}, "
            + (f"by `{run['command']}`." if run.get("command") else "command not recorded."),
        ]
    per_label = next(
        (
            metrics[split]["per_label"]
            for split in ("test", "validation")
            if isinstance(metrics.get(split), dict) and metrics[split].get("per_label")
        ),
        None,
    )
    if per_label:
        split = "test" if isinstance(test, dict) and test.get("per_label") else "validation"
        lines += [
            "",
            f"Per label ({split}):",
            "",
            "| label | precision | recall | F1 | reviews |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {row['label']} | {_number(row['precision'])} | {_number(row['recall'])} | {_number(row['f1'])} | "
            f"{row['support']} |"
            for row in per_label
        ]
    if plots:
        lines += ["", *(f"![{name}]({path})" for name, path in plots.items())]
    lines += ["", "## Calibration", ""]
    if calibration:
        lines.append(
            f"Temperature T = {calibration.get('temperature', 1.0):.3f} ({calibration.get('fitted_on', 'fit not recorded')}): "
            f"probabilities are softmax(logits / T). Calibration error {_number(calibration.get('ece_before'))} -> "
            f"{_number(calibration.get('ece_after'))}, log loss {_number(calibration.get('nll_before'))} -> "
            f"{_number(calibration.get('nll_after'))}."
            + (f" {calibration['reason']}." if calibration.get("reason") else "")
        )
    else:
        lines.append("No calibration.json: probabilities are the plain softmax (T = 1).")
    id2label = ", ".join(f"{index}: {label!r}" for index, label in enumerate(labels))
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from inference.predictor import Predictor  # this project",
        "",
        'Predictor.from_pretrained("path/to/this/folder").predict_one("A wonderful film.")',
        "```",
        "",
        "With PEFT alone (plain softmax, the tokenizer's own truncation; the label names come from",
        "`sentiment_config.json`, since PEFT saves no model config):",
        "",
        "```python",
        "import json",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'labels = json.load(open("path/to/this/folder/sentiment_config.json"))["labels"]  # ' + id2label,
        "base = AutoModelForSequenceClassification.from_pretrained(",
        f'    "{config.base_model}", num_labels=len(labels),',
        "    id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})",
        'model = PeftModel.from_pretrained(base, "path/to/this/folder").eval()',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        "```",
        "",
    ]
    notes = folder / NOTES_FILE
    if notes.exists():
        lines += [notes.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines)


def _data_source(source: str) -> str:
    if source == LOCAL_IMDB_COPY:
        return (
            f"`{source}`, a local copy of `{HUB_DATASET}`: the IMDb Large Movie Review Dataset v1.0 (Maas et al., "
            f"2011) as parquet, made from the release's files ({IMDB_RELEASE}); its README.md gives their sha256"
        )
    return f"`{source}`"


def _filled_in_later(fields) -> list[str]:
    """The record's fields filled in after the run, apart from what the run itself recorded."""
    if not isinstance(fields, dict):
        return []
    lines = [
        f"Filled in after the run (the rest of the record is the run's own): {fields.get('note', '')}".rstrip(),
        "",
    ]
    lines += [
        f"- `{key}`: {json.dumps(value) if not isinstance(value, str) else value}"
        for key, value in fields.items()
        if key != "note"
    ]
    return [*lines, ""]


def _row(figures: dict) -> list[str]:
    temperature = figures.get("temperature")
    return [
        *(_number(figures.get(key)) for key, _, _ in HEADLINE),
        f"{temperature:.3f}" if isinstance(temperature, (int, float)) else "not recorded",
        str(figures.get("numeric_precision", "not recorded")),
    ]


def _model_index_result(figures: dict, dataset_id: str, split: str, binary: bool) -> dict:
    average = "" if binary else " (macro)"
    return {
        "task": {"type": "text-classification", "name": "Text Classification"},
        "dataset": {"name": dataset_id, "type": dataset_id, "split": split},
        "metrics": [
            {
                "type": kind,
                "value": round(float(figures[key]), 4),
                "name": f"{name}{average if key in ('f1', 'precision', 'recall', 'roc_auc') else ''}",
            }
            for key, kind, name in HEADLINE
            if isinstance(figures.get(key), (int, float))
        ],
    }


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _class_weights(run: dict) -> str:
    weights = run.get("class_weights")
    if not weights:
        return "none (plain cross-entropy)"
    return "balanced (inverse frequency): " + ", ".join(f"{label} {weight:.3f}" for label, weight in weights.items())
