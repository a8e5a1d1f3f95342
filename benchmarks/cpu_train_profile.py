"""Where CPU training time goes: bare training steps of the project's model, one setup at a time.

    python benchmarks/cpu_train_profile.py --max-length 256 --batch-size 32                 # the four setups
    python benchmarks/cpu_train_profile.py --max-length 512 --batch-size 16 --setups cheap-bf16 --profile

The model is train.py's (build_classifier: the packaged MiniLM, LoRA on every linear layer), fed random
token ids of a fixed length, so only the step is timed: forward, backward and an AdamW step, no data loading,
no evaluation. Setups: torch-fp32 (PyTorch's dropout, fp32: train.py before issue 12), cheap-fp32
(training/cpu_training.py's dropout), torch-bf16 and cheap-bf16 (autocast; fast only on a CPU with AMX).
`--profile` prints torch.profiler's table of the most expensive operators over two steps.
benchmarks/benchmark.py --cpu-train measures the same through train.py and the Trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from training.cpu_training import use_cheap_dropout
from training.model import LoraSettings, build_classifier

SETUPS = ("torch-fp32", "cheap-fp32", "torch-bf16", "cheap-bf16")


def timed_steps(setup: str, max_length: int, batch_size: int, steps: int, rank: int, profile: bool) -> dict:
    torch.manual_seed(0)
    model = build_classifier("minilm", LoraSettings(rank=rank, alpha=2 * rank, dropout=0.1, targets="all-linear"))
    if setup.startswith("cheap"):
        use_cheap_dropout(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 30000, (batch_size, max_length))
    mask = torch.ones_like(ids)
    mask[::2, max_length * 3 // 4 :] = 0  # every other review a quarter shorter: the padding mask is exercised
    labels = torch.randint(0, 2, (batch_size,))
    bf16 = setup.endswith("bf16")

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up: first calls allocate and pick kernels
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        with profiler(activities=[ProfilerActivity.CPU]) as recorded:
            step(), step()
        print(recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    return {
        "setup": setup,
        "max_length": max_length,
        "batch_size": batch_size,
        "samples_per_s": round(batch_size / seconds, 2),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=256, help="Tokens per review (default: %(default)s).")
    parser.add_argument("--batch-size", type=int, default=32, help="Reviews per step (default: %(default)s).")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per setup (default: %(default)s).")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default: %(default)s, train.py's).")
    parser.add_argument("--setups", default=",".join(SETUPS), help="Comma-separated subset of " + ", ".join(SETUPS))
    parser.add_argument("--profile", action="store_true", help="Print the profiler's operator table per setup.")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.setups.split(",") if name.strip()]
    if set(chosen) - set(SETUPS):
        parser.error(f"unknown setup(s): {', '.join(sorted(set(chosen) - set(SETUPS)))}")
    rows = []
    for setup in chosen:
        rows.append(timed_steps(setup, args.max_length, args.batch_size, args.steps, args.lora_rank, args.profile))
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
