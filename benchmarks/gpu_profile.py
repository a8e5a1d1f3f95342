"""Where the GPU time goes: phase timings for inference and training, cold and warm, in one short run.

    python benchmarks/gpu_profile.py --data .device_carry/imdb --output results/gpu_profile.json

`benchmarks/benchmark.py --gpu-train --gpu-inference` says how fast; this says why. Each part is written to
the JSON as soon as it ends, so a run stopped at its time limit keeps what it measured.
- inference: the shipped adapter through the Predictor (bf16 on a GPU): tokenizing, then the batched
  forward passes, twice over the same reviews (cold: first time each batch shape is seen; warm: again),
  and the same with batch lengths rounded up to a multiple of 64 (fewer distinct shapes).
- training: the Trainer with the project's settings on a random DistilBERT-base-shaped model, two runs
  in one process (the second finds every kernel and shape already seen).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.paths import DEFAULT_MODEL_DIR


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function, *args, **kwargs):
    synchronize()
    started = time.perf_counter()
    result = function(*args, **kwargs)
    synchronize()
    return result, round(time.perf_counter() - started, 3)


def forward_pass(predictor, token_ids: list[list[int]], batch_size: int, multiple: int | None) -> dict:
    """The Predictor's batched forward, split into padding, host-to-device, model and device-to-host time."""
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    spent = {"pad_s": 0.0, "to_device_s": 0.0, "model_s": 0.0, "to_host_s": 0.0}
    shapes = set()
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            tick = time.perf_counter()
            batch = predictor.tokenizer.pad(
                {"input_ids": [token_ids[i] for i in chosen]}, return_tensors="pt", pad_to_multiple_of=multiple
            )
            shapes.add(tuple(batch["input_ids"].shape))
            spent["pad_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            inputs = {key: value.to(predictor.device) for key, value in batch.items()}
            synchronize()
            spent["to_device_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            output = predictor.model(**inputs).logits
            synchronize()
            spent["model_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            output.double().cpu().numpy()
            spent["to_host_s"] += time.perf_counter() - tick
    total = time.perf_counter() - started
    return {
        **{key: round(value, 3) for key, value in spent.items()},
        "total_s": round(total, 3),
        "reviews_per_s": round(len(token_ids) / total, 1),
        "distinct_shapes": len(shapes),
    }


def profile_inference(data: Path, reviews: int, model_dir: Path) -> dict:
    import pandas as pd

    from inference.predictor import Predictor
    from training.text import encode_texts

    texts = pd.read_parquet(data / "test.parquet", columns=["text"])["text"].tolist()[:reviews]
    predictor, load_s = timed(Predictor.from_pretrained, model_dir)
    result = {
        "reviews": len(texts),
        "device": predictor.device_name,
        "precision": predictor.precision,
        "load_s": load_s,
    }
    token_ids, result["encode_s"] = timed(
        encode_texts, predictor.tokenizer, texts, predictor.config.max_length, predictor.config.truncation
    )
    result["mean_tokens"] = round(sum(map(len, token_ids)) / len(token_ids), 1)
    _, result["end_to_end_cold_s"] = timed(predictor.predict_logits, texts, batch_size=256)
    _, result["end_to_end_warm_s"] = timed(predictor.predict_logits, texts, batch_size=256)
    for batch_size in (256, 64):
        for multiple in (None, 64):
            name = f"forward_b{batch_size}_multiple{multiple}"
            result[name] = forward_pass(predictor, token_ids, batch_size, multiple)
    with torch.profiler.profile(activities=profiler_activities()) as profiler:
        forward_pass(predictor, token_ids[:1024], 256, None)
    result["profiler_top"] = top_operations(profiler)
    return result


def profiler_activities() -> list:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def top_operations(profiler, count: int = 15) -> list[dict]:
    averages = profiler.key_averages()
    device_key = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
    rows = sorted(averages, key=lambda event: -event.self_cpu_time_total)[:count]
    return [
        {
            "name": event.key,
            "calls": event.count,
            "self_cpu_ms": round(event.self_cpu_time_total / 1000, 1),
            "self_device_ms": round(getattr(event, device_key, 0) / 1000, 1),
        }
        for event in rows
    ]


def profile_training(data: Path, steps: int, shape: dict, workdir: Path) -> dict:
    from training import config as config_module
    from training import train
    from training.tiny_model import random_distilbert

    base = random_distilbert(workdir / "distilbert", shape)
    result = {"steps": steps, "batch_size": 32, "max_length": 512, "runs": []}
    for run, workers in enumerate((4, 0, 4)):
        config = config_module.TrainConfig(
            base_model=str(base),
            data=str(data),
            output_dir=str(workdir / f"adapter{run}"),
            results_dir=str(workdir / f"results{run}"),
            max_length=512,
            max_steps=steps,
            batch_size=32,
            eval_batch_size=64,
            train_limit=steps * 32,
            validation_limit=64,
            logging_steps=max(1, steps // 2),
            seed=0,
            num_workers=workers,
        )
        summary, seconds = timed(train.main, config)
        result["runs"].append(
            {"num_workers": workers, "samples_per_s": summary["train_samples_per_second"], "main_s": seconds}
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="IMDb folder with train.parquet and test.parquet.")
    parser.add_argument("--output", type=Path, required=True, help="JSON file for the figures.")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="Adapter for the inference part.")
    parser.add_argument("--reviews", type=int, default=4000, help="Test reviews for the inference part.")
    parser.add_argument("--train-steps", type=int, default=100, help="Trainer steps per training run.")
    parser.add_argument("--tiny", action="store_true", help="Tiny model and sizes: checks the script on a CPU.")
    args = parser.parse_args(argv)
    from training.tiny_model import DISTILBERT_BASE_SHAPE, TINY_DISTILBERT_SHAPE

    report = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")

    report["inference"], _ = timed(profile_inference, args.data, args.reviews, args.model)
    save()
    with tempfile.TemporaryDirectory() as scratch:
        shape = TINY_DISTILBERT_SHAPE if args.tiny else DISTILBERT_BASE_SHAPE
        report["training"] = profile_training(args.data, args.train_steps, shape, Path(scratch))
    save()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
