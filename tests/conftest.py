"""Shared fixtures: slices of the real IMDb data, a tiny randomly initialised DistilBERT, an adapter trained
on it in seconds, one Predictor of each kind, and the bad inputs several modules feed the project.
Everything runs offline on the CPU.

Under CI (the environment variable CI set, as .ci/run sets it) a missing input (the IMDb data, Chromium,
Playwright, the accelerate command) fails the test that needs it: a run that silently shrinks is not green.
Elsewhere those tests skip, saying what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT

IMDB_DIR = Path(os.environ.get("IMDB_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "imdb"))
SHIPPED_MODEL_DIR = DEFAULT_MODEL_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# 'auto' precision is bf16 on a CPU with AMX; without AMX it is int8 on an x86 CPU with AVX2 or VNNI for a model
# whose int8 scheme passed its gate (the shipped adapter's int8.json), fp32 otherwise. The tests keep 'auto' off
# bf16 (here and in every command they start) so most behave alike on every machine: under this switch the tiny
# adapter (no int8 gate) runs fp32, the shipped adapter int8 on an AVX2/VNNI CPU. Tests of one precision ask
# for it or mock the hardware; the tests marked default_precision lift the switch (real_default_precision).
os.environ["SENTIMENT_CPU_BF16"] = "0"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str):
    """A test input is missing: fail under CI (the run must not shrink unnoticed), skip elsewhere."""
    if under_ci():
        pytest.fail(f"{reason} (CI is set: a missing input fails the run instead of skipping tests)", pytrace=False)
    pytest.skip(reason)


def require_imdb() -> Path:
    if not (IMDB_DIR / "train.parquet").exists():
        missing(f"IMDb parquet files not found in {IMDB_DIR}; set IMDB_DATA_DIR")
    return IMDB_DIR


@contextlib.contextmanager
def real_default_precision():
    """Inside: the environment a user has, without the precision switches these tests set, so 'auto' resolves
    as it does for them on this machine (bf16 on an AMX CPU). Only loading reads it: a Predictor loaded inside
    keeps its precision after."""
    from training.device import CPU_BF16_SWITCH, CPU_INT8_SWITCH, _proc_cpuinfo

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CPU_BF16_SWITCH, raising=False)
        patch.delenv(CPU_INT8_SWITCH, raising=False)
        _proc_cpuinfo.cache_clear()  # read afresh: nothing a test cached decides the machine's answer
        yield


def expected_default_precision(model_dir: Path, device_type: str = "cpu") -> str:
    """What 'auto' must serve `model_dir` in on this machine, from the hardware's answers (the CPU's flags as
    training.device.cpu_features reads them) and the model's own int8 record, not from inference.predictor's
    choice. On the CPU: bf16 with AMX; int8 with AVX2, VNNI or AMX int8 when the PyTorch int8 scheme recorded
    beside the adapter passed its gate and held on its test check; else fp32. On a CUDA GPU: bf16 where it
    computes bf16."""
    from training.device import cpu_features

    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device_type != "cpu":
        return "fp32"
    features = cpu_features()
    if {"amx_tile", "amx_bf16"} <= features:
        return "bf16"
    record = model_dir / "int8.json"
    scheme = json.loads(record.read_text())["schemes"].get("pytorch", {}) if record.is_file() else {}
    # Served by 'auto' only when it passed its gate and did not fail its test check (held: true, or not checked).
    gated = scheme.get("passed") is True and scheme.get("held") is not False
    if gated and features & {"avx2", "avx_vnni", "avx512_vnni", "amx_int8"}:
        return "int8"
    return "fp32"


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    return require_imdb()


@pytest.fixture(scope="session")
def small_imdb(tmp_path_factory, imdb_dir) -> Path:
    """A folder shaped like the real one: 400 training and 120 test reviews, balanced, fixed seed."""
    from training.data import stratified_subset

    folder = tmp_path_factory.mktemp("small_imdb")
    for split, size in (("train", 400), ("test", 120)):
        frame = pd.read_parquet(imdb_dir / f"{split}.parquet", columns=["text", "label"])
        stratified_subset(frame, size, seed=0).to_parquet(folder / f"{split}.parquet")
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    """A 2-layer, width-32 DistilBERT with random weights and the real uncased WordPiece vocabulary."""
    from training.tiny_model import TINY_DISTILBERT_SHAPE, random_distilbert

    return random_distilbert(tmp_path_factory.mktemp("tiny_distilbert"), TINY_DISTILBERT_SHAPE)


def tiny_train_config(base: Path, data: Path, tmp_path: Path, **overrides):
    from training.config import TrainConfig

    settings = dict(
        base_model=str(base),
        data=str(data),
        output_dir=str(tmp_path / "adapter"),
        results_dir=str(tmp_path / "results"),
        max_length=128,
        epochs=1,
        max_steps=12,
        batch_size=16,
        eval_batch_size=64,
        learning_rate=1e-3,
        lora_rank=4,
        lora_alpha=8,
        logging_steps=4,
        eval_steps=6,
    )
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_distilbert, small_imdb) -> Path:
    """An adapter trained by training/train.py on the tiny DistilBERT; shared by read-only tests."""
    from training.train import main

    folder = tmp_path_factory.mktemp("tiny_run")
    config = tiny_train_config(tiny_distilbert, small_imdb, folder)
    main(config)
    return Path(config.output_dir)


@pytest.fixture(scope="session")
def tiny_predictor(tiny_adapter):
    """The tiny adapter loaded as the app loads one (calibrated), but in exact fp32: the default precision
    depends on the CPU, and these tests must not (tests marked default_precision run the default).
    Shared read-only: the Predictor is built to be shared (the app shares one between sessions)."""
    from inference.predictor import Predictor

    return Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def shipped_predictor():
    """The shipped adapter as the app and the CLI load it on the CPU (calibrated), in exact fp32."""
    from inference.predictor import Predictor

    return Predictor.from_pretrained(SHIPPED_MODEL_DIR, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def pickled_adapter(tiny_adapter, tmp_path_factory) -> Path:
    """The tiny adapter re-saved by PEFT as adapter_model.bin (pickle), with no safetensors beside it."""
    from training.model import load_classifier

    folder = tmp_path_factory.mktemp("pickled") / "adapter"
    shutil.copytree(tiny_adapter, folder)
    model, _, _ = load_classifier(tiny_adapter, merge=False)
    (folder / "adapter_model.safetensors").unlink()
    model.save_pretrained(folder, safe_serialization=False, save_embedding_layers=False)
    assert (folder / "adapter_model.bin").exists() and not (folder / "adapter_model.safetensors").exists()
    return folder


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> dict[Path, str]:
    """Review files no reader can use, each with the words of its one-line refusal (training.data.read_table's)."""
    folder = tmp_path_factory.mktemp("bad_files")
    files = {
        "latin1.txt": ("Un film très réussi\n".encode("latin-1"), "not valid UTF-8"),
        "latin1.csv": ("text\nUn film très réussi\n".encode("latin-1"), "not valid UTF-8"),
        "no_column.csv": (b"review\nGreat\n", "no 'text' column"),
        "binary.parquet": (bytes(range(256)) * 4, "could not be read as parquet"),
        "binary.csv": (bytes(range(256)) * 8, "could not be read as csv"),
        "binary.jsonl": (b"\x00\x01\x02{\xff\xfe" * 50, "not valid UTF-8"),
        "broken.jsonl": (b'{"text": "Great"}\n{"text": \n', "could not be read as jsonl"),
        "empty.csv": (b"", "is empty"),
        "empty.jsonl": (b"", "is empty"),
        "reviews.docx": (b"PK\x03\x04", "unsupported file type"),
        "header_only.csv": (b"text,label\n", "has no rows"),
    }
    refusals = {}
    for name, (content, message) in files.items():
        (folder / name).write_bytes(content)
        refusals[folder / name] = message
    refusals[folder / "missing.csv"] = "no such file"
    return refusals


def recomputed_validation_metrics(adapter: Path) -> dict:
    """The adapter's validation metrics computed again, independently of the Trainer: the validation split
    rebuilt from the settings recorded with the adapter, predicted by the Predictor (uncalibrated, as the
    Trainer's compute_metrics sees the logits) and scored by scikit-learn."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from inference.predictor import Predictor
    from training.data import load_training_data
    from training.model import SentimentConfig

    settings = SentimentConfig.load(adapter).training
    data = settings["data"] if Path(settings["data"]).is_absolute() else str(PROJECT_ROOT / settings["data"])
    validation = load_training_data(
        data,
        settings["validation_fraction"],
        settings["seed"],
        settings["train_limit"],
        settings["validation_limit"],
    ).validation
    predictor = Predictor.from_pretrained(adapter, device="cpu", precision="fp32", calibrated=False)
    probabilities = predictor.predict_proba(validation["text"].tolist())
    labels = validation["label"].to_numpy()
    return {
        "num_examples": len(labels),
        "accuracy": accuracy_score(labels, probabilities.argmax(axis=1)),
        "f1": f1_score(labels, probabilities.argmax(axis=1)),
        "roc_auc": roc_auc_score(labels, probabilities[:, 1]),
    }


@pytest.fixture
def opened_tables(monkeypatch) -> list[str]:
    """Every file pandas or pyarrow is asked to read during the test (parquet, CSV, JSON): the data a command touched."""
    opened: list[str] = []
    for reader in ("read_parquet", "read_csv", "read_json"):
        real = getattr(pd, reader)

        def recording(path, *args, _real=real, **kwargs):
            opened.append(str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(pd, reader, recording)
    # training.data reads Parquet through pyarrow itself (its metadata first, to refuse a decompression bomb).
    import pyarrow.parquet as pq

    class RecordingParquetFile(pq.ParquetFile):
        def __init__(self, source, *args, **kwargs):
            opened.append(str(source))
            super().__init__(source, *args, **kwargs)

    def recording_schema(where, *args, _real=pq.read_schema, **kwargs):
        opened.append(str(where))
        return _real(where, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", RecordingParquetFile)
    monkeypatch.setattr(pq, "read_schema", recording_schema)
    return opened


class StepLog:
    """Spies on a training run in this process: what Trainer.train was asked to resume from, and the
    global step after each optimizer step the Trainer actually ran."""

    def __init__(self, monkeypatch):
        import transformers
        import transformers.trainer

        self.resumed_from, self.steps = [], []
        log = self

        class Recorder(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                log.steps.append(state.global_step)

        real_train = transformers.Trainer.train

        def train(trainer, *args, **kwargs):
            log.resumed_from.append(kwargs.get("resume_from_checkpoint", args[0] if args else None))
            return real_train(trainer, *args, **kwargs)

        monkeypatch.setattr(transformers.Trainer, "train", train)
        monkeypatch.setattr(
            transformers.trainer, "DEFAULT_CALLBACKS", [*transformers.trainer.DEFAULT_CALLBACKS, Recorder]
        )


@pytest.fixture
def training_steps(monkeypatch) -> StepLog:
    """Records, for training runs in this process, the resume_from_checkpoint Trainer.train was given
    and the global step after each optimizer step actually run."""
    return StepLog(monkeypatch)
