"""The cpu-table part: every way this project can serve on a CPU, in one run against transformers.pipeline on the
same reviews, then the same table again in a child process with AMX off (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI),
which is how this CPU stands in for one without AMX.

Systems: the pipeline; the PyTorch backend in fp32, bf16 and int8 (the adapter's gated scheme, and every matrix);
the ONNX export in fp32 and int8 (the same two schemes). For each: reviews/s, ratio to the pipeline, accuracy,
labels changed against PyTorch fp32, and fraction of the machine's matrix-multiply limit; and which one
`Predictor.from_pretrained` serves by default here, with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_config import BenchConfig
from benchmarks.machine import compute_use, flop_count, limit_seconds, machine_limit
from benchmarks.timing import accuracy, interleaved, quiet, ratio, sample_reviews
from inference.int8 import HEAD_ROLES, MAX_ACCURACY_DROP_POINTS, Int8Scheme

AMX_OFF_ISA = "AVX512_CORE_VNNI"  # the highest oneDNN level below AMX on this Xeon
ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"


def bench_cpu_table(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """The table here, then (on a CPU with AMX, unless a cap is already set) the table with AMX off."""
    from training.device import cpu_features

    result = {"this_cpu": measure_table(config, model_dir, workdir)}
    if os.environ.get(ISA_VARIABLE):
        result["amx_off"] = {"skipped": f"this run is itself capped ({ISA_VARIABLE}={os.environ[ISA_VARIABLE]})"}
    elif not {"amx_tile", "amx_bf16"} <= cpu_features():
        result["amx_off"] = {"skipped": "this CPU has no AMX: the table above is the one without it"}
    else:
        result["amx_off"] = amx_off_table(config, model_dir)
    return {**result, **headline(result)}


def headline(result: dict) -> dict:
    """The figures the targets read: the default's ratio to the pipeline with AMX and without, its accuracy change
    against exact fp32, and the export's fp32 speed against PyTorch fp32."""
    figures = {}
    for name, table in (("", result["this_cpu"]), ("amx_off_", result.get("amx_off", {}))):
        if "systems" not in table:
            continue
        default = table["systems"][table["default"]["system"]]
        figures[f"{name}default_ratio"] = default["ratio_to_pipeline"]
        figures[f"{name}default_accuracy_change_points"] = default["accuracy_change_points"]
        export = table["systems"].get("onnxruntime fp32")
        if export:
            figures[f"{name}export_fp32_ratio_to_pytorch_fp32"] = ratio(
                export["reviews_per_s"], table["systems"]["pytorch fp32"]["reviews_per_s"]
            )
    return figures


def amx_off_table(config: BenchConfig, model_dir: Path) -> dict:
    """This part again in a child process with oneDNN capped below AMX: PyTorch's bf16 loses its hardware and
    'auto' chooses as on a CPU without AMX. onnxruntime picks its kernels itself and ignores the cap."""
    with tempfile.TemporaryDirectory(prefix="cpu_table_") as scratch:
        output = Path(scratch) / "amx_off.json"
        command = [sys.executable, "benchmarks/benchmark.py", "--cpu-table", "--model", str(model_dir)]
        command += ["--data", str(config.data), "--reviews", str(config.reviews), "--rounds", str(config.rounds)]
        command += ["--seed", str(config.seed), "--batch-size", str(config.batch_size), "--output", str(output)]
        command += ["--pipeline-batch-size", str(config.pipeline_batch_size)]
        command += (["--threads", str(config.threads)] if config.threads else []) + (
            ["--smoke"] if config.smoke else []
        )
        from training.paths import PROJECT_ROOT

        done = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            # The same code as this run (PYTHONPATH), with oneDNN capped below AMX.
            env={
                **os.environ,
                ISA_VARIABLE: AMX_OFF_ISA,
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            },
            capture_output=True,
            text=True,
            timeout=6 * 3600,
        )
        if not output.exists():
            raise RuntimeError(f"the AMX-off child failed ({done.returncode}): {done.stderr[-2000:]}")
        part = json.loads(output.read_text(encoding="utf-8"))["parts"]["cpu-table"]
    if "error" in part:
        raise RuntimeError(f"the AMX-off child failed: {part['error']}")
    return {**part["this_cpu"], "label": f"AMX off: {ISA_VARIABLE}={AMX_OFF_ISA} in a child process"}


def loaders(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """How each system is loaded; the ONNX ones only where requirements-export.txt is installed."""
    import importlib.util

    from benchmarks.pipeline_baseline import load_pipeline
    from inference.predictor import Predictor

    def pytorch(precision: str, keep_head_only: bool = False):
        def load():
            if not keep_head_only:
                return Predictor.from_pretrained(model_dir, device="cpu", precision=precision, threads=config.threads)
            from inference.torch_backend import TorchBackend, quantize_int8

            exact = Predictor.from_pretrained(model_dir, device="cpu", precision="fp32", calibrated=False)
            model = quantize_int8(exact.model, HEAD_ROLES)
            return Predictor(TorchBackend(model, exact.tokenizer, exact.config, exact.device, model_dir, "int8"))

        return load

    systems = {
        "pipeline": lambda: load_pipeline(model_dir, device="cpu", batch_size=config.pipeline_batch_size),
        "pytorch fp32": pytorch("fp32"),
        "pytorch bf16": pytorch("bf16"),
        "pytorch int8 (gated scheme)": pytorch("int8"),
        "pytorch int8 (every matrix)": pytorch("int8", keep_head_only=True),
    }
    if importlib.util.find_spec("onnxruntime") is None:
        return systems
    from inference import export

    folder = workdir / "cpu_table_export"
    if not folder.exists():
        with quiet():
            export.main(export.ExportConfig(model=model_dir, output=folder))

    def exported(precision: str, keep_head_only: bool = False):
        def load():
            if not keep_head_only:
                return Predictor.from_pretrained(folder, precision=precision, threads=config.threads)
            import dataclasses

            import onnxruntime

            from inference.onnx_backend import ONNX_FILE, ExportRecord, OnnxBackend, load_tokenizer

            export.quantize_graph(folder / ONNX_FILE, workdir / "every_matrix_int8.onnx", HEAD_ROLES)
            options = onnxruntime.SessionOptions()
            if config.threads:
                options.intra_op_num_threads = config.threads
            session = onnxruntime.InferenceSession(
                str(workdir / "every_matrix_int8.onnx"), options, providers=["CPUExecutionProvider"]
            )
            record = dataclasses.replace(ExportRecord.load(folder), int8=Int8Scheme("onnxruntime").as_dict())
            return Predictor(OnnxBackend(session, load_tokenizer(folder / "tokenizer.json"), record, folder, "int8"))

        return load

    systems["onnxruntime fp32"] = exported("fp32")
    systems["onnxruntime int8 (gated scheme)"] = exported("int8")
    systems["onnxruntime int8 (every matrix)"] = exported("int8", keep_head_only=True)
    return systems


def measure_table(config: BenchConfig, model_dir: Path, workdir: Path) -> dict:
    """Every system on the same reviews, interleaved; the default named by what `auto` resolves to here."""
    from benchmarks.pipeline_baseline import pipeline_positive_probability
    from inference.predictor import Predictor
    from training.base import quiet_loading

    reviews = sample_reviews(config.data, config.reviews, config.seed)
    texts, labels = reviews["text"].tolist(), reviews["label"].to_numpy()
    loaded, load_s = {}, {}
    for name, load in loaders(config, model_dir, workdir).items():
        started = time.perf_counter()
        with quiet_loading():
            loaded[name] = load()
        load_s[name] = round(time.perf_counter() - started, 2)
    classify = loaded.pop("pipeline")
    batch = {
        name: (lambda part, p=predictor: p.predict_proba(part, batch_size=config.batch_size)[:, 1].tolist())
        for name, predictor in loaded.items()
    }
    batch["pipeline"] = lambda part: pipeline_positive_probability(classify(part))
    for score in batch.values():
        score(texts[:2])  # warm-up: first-call set-up is not part of serving
    throughput = interleaved(batch, texts, config.rounds)
    flops = flop_count(loaded["pytorch fp32"], texts)
    limit = machine_limit(flops["model_shape"], limit_seconds(config))
    exact = np.asarray(throughput["pytorch fp32"]["positive_probability"]) > 0.5
    exact_accuracy = accuracy(labels, throughput["pytorch fp32"]["positive_probability"])
    pipeline_rate = len(texts) / throughput["pipeline"]["seconds"]
    systems = {}
    for name, measured in throughput.items():
        precision = loaded[name].precision if name in loaded else "fp32"
        rate = len(texts) / measured["seconds"]
        positive = np.asarray(measured["positive_probability"]) > 0.5
        systems[name] = {
            "precision": precision,
            "reviews_per_s": round(rate, 2),
            "ratio_to_pipeline": ratio(rate, pipeline_rate),
            "accuracy": round(accuracy(labels, measured["positive_probability"]), 4),
            "accuracy_change_points": round(
                100 * (accuracy(labels, measured["positive_probability"]) - exact_accuracy), 2
            ),
            "labels_changed_vs_fp32": int(np.sum(positive != exact)),
            "load_s": load_s[name],
            **({"keep_fp32": loaded[name].info().get("int8", {}).get("keep_fp32")} if precision == "int8" else {}),
            **compute_use(
                measured["seconds"], flops["gflop"] * 1e9, limit, int8=precision == "int8", bf16=precision == "bf16"
            ),
        }
    default = Predictor.from_pretrained(model_dir, device="cpu")  # what a user gets here, and why
    return {
        "reviews": len(texts),
        "default": {
            "system": default_system(default.precision),
            "precision": default.precision,
            "reason": default.precision_reason,
        },
        "environment": {
            ISA_VARIABLE: os.environ.get(ISA_VARIABLE),
            "SENTIMENT_CPU_BF16": os.environ.get("SENTIMENT_CPU_BF16"),
        },
        "systems": systems,
        "accuracy_tolerance_points": MAX_ACCURACY_DROP_POINTS,
        "machine_limit": limit,
        "flops": flops,
        "method": f"{len(texts)} test reviews, batches of {config.batch_size} (pipeline: {config.pipeline_batch_size}), "
        f"{config.rounds} interleaved rounds, tokenization included; labels changed against PyTorch fp32",
    }


def default_system(precision: str) -> str:
    """The table's row for what an adapter folder serves by default at `precision`."""
    return {"int8": "pytorch int8 (gated scheme)"}.get(precision, f"pytorch {precision}")
