"""train.py runs for the benchmarks: the settings of a measured run, the run itself with its progress kept out
of the table, and the tiny adapter --smoke trains in seconds."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_config import BenchConfig
from benchmarks.timing import quiet
from training.tiny_model import TINY_DISTILBERT_SHAPE, random_distilbert


def tiny_adapter(workdir: Path, data: str) -> Path:
    """A LoRA adapter on a tiny random DistilBERT, trained by train.py in seconds (for --smoke)."""
    from training import config as config_module
    from training import train

    base = random_distilbert(workdir / "tiny_distilbert", TINY_DISTILBERT_SHAPE)
    config = config_module.TrainConfig(
        base_model=str(base),
        data=data,
        output_dir=str(workdir / "tiny_adapter"),
        results_dir=str(workdir / "tiny_results"),
        max_length=128,
        max_steps=4,
        batch_size=8,
        eval_batch_size=32,
        train_limit=64,
        validation_limit=32,
        lora_rank=4,
        lora_alpha=8,
        logging_steps=2,
        eval_steps=4,
    )
    with quiet():
        train.main(config)
    return Path(config.output_dir)


def training_config(config: BenchConfig, base: str, run: Path, steps: int, max_length: int, settings: dict):
    """train.py's settings for `steps` steps of --train-batch-size reviews, written under `run`."""
    from training import config as config_module

    return config_module.TrainConfig(
        base_model=base,
        data=config.data,
        output_dir=str(run / "adapter"),
        results_dir=str(run / "results"),
        max_length=max_length,
        max_steps=steps,
        batch_size=config.train_batch_size,
        eval_batch_size=2 * config.train_batch_size,
        train_limit=max(steps * config.train_batch_size, 4),
        validation_limit=max(8, config.train_batch_size * 4),
        logging_steps=max(1, steps // 4),
        report_to="none",
        seed=0,
        **settings,
    )


def timed_training(train_config) -> dict:
    """train.main's summary (samples/s, precision, ...), its progress kept out of the table."""
    from training import train

    with quiet():
        return train.main(train_config)
