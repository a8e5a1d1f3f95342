"""The one place the service and bulk scoring choose how a model folder is loaded, and what a prediction looks
like on the wire. Both keep to the surface the PyTorch Predictor and the OnnxPredictor share (predict, labels,
info, device_name, precision), so the later merge of the two changes only `load_predictor`.
"""

from __future__ import annotations

from pathlib import Path

from training.text import UNCERTAIN, Prediction, verdict

PYTORCH = "pytorch"  # the backends GET /v1/model reports
ONNXRUNTIME = "onnxruntime"


def backend_of(model_dir: str | Path) -> str:
    """ "onnxruntime" for an ONNX export (inference/export.py), "pytorch" for an adapter folder."""
    from inference.onnx_backend import is_export  # numpy and the standard library only

    return ONNXRUNTIME if is_export(model_dir) else PYTORCH


def model_problem(model_dir: str | Path) -> str | None:
    """Why `model_dir` cannot be served (None: nothing found), checked before any replica or actor starts. An export
    is checked as it loads; an adapter folder by training.model's own check (weights, configs, pickle refused)."""
    if backend_of(model_dir) == ONNXRUNTIME:
        return None
    from training.errors import ModelLoadError
    from training.model import check_adapter_folder  # torch: imported only where a command checks its settings

    try:
        check_adapter_folder(Path(model_dir))
    except ModelLoadError as error:
        return str(error)
    return None


def load_predictor(
    model_dir: str | Path, device: str | None = None, precision: str = "auto", threads: int | None = None
):
    """The model in `model_dir` loaded once, calibrated, reading long reviews as it was trained (truncate).

    `threads`: the CPU threads this process computes with (None: the library's default, every core). A Ray
    worker is one of several processes on a machine, so each gets its share, or they fight over the cores."""
    if backend_of(model_dir) == ONNXRUNTIME:
        from inference.predictor import Predictor  # no torch: an export's replica never imports it

        return Predictor.from_pretrained(model_dir, device=device, precision=precision, threads=threads)
    import torch

    from inference.predictor import Predictor

    if threads is not None:
        torch.set_num_threads(threads)  # process-wide, and this process serves this one model
    return Predictor.from_pretrained(model_dir, device=device, precision=precision, calibrated=True)


def describe(predictor, backend: str) -> dict:
    """What GET /v1/model reports: the predictor's own info() plus its labels and backend."""
    return {**predictor.info(), "labels": list(predictor.labels), "backend": backend}


def prediction_record(prediction: Prediction, uncertain_below: float | None) -> dict:
    """One prediction as the API returns it: the label, its confidence, every label's probability, and whether
    it is uncertain (confidence below `uncertain_below`; `verdict` is then UNCERTAIN, else the label)."""
    shown = verdict(prediction.label, prediction.confidence, uncertain_below)
    return {
        "label": prediction.label,
        "confidence": prediction.confidence,
        "probabilities": dict(prediction.probabilities),
        "uncertain": shown == UNCERTAIN,
        "verdict": shown,
    }
