"""The service's settings: each one a typed field with its help, read from the checked-in Ray Serve config file
(serving/config.yaml: the `args` of its application, plus `http_options` for the host and port), overridden by
sentiment-serve's flags, and checked in one place that reports every problem at once.

`serve run serving/config.yaml` and `sentiment-serve` read the same file, so a recipe for the service is a file
and the command line only overrides it. Imports neither torch nor Ray: the ingress replica unpickles these.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

from serving.predictors import model_problem
from training.config import fits
from training.errors import DataError
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT

CONFIG_FILE = Path(__file__).resolve().with_name("config.yaml")
DEFAULT_HOST = "127.0.0.1"  # loopback: binding beyond it is a decision (set SENTIMENT_API_TOKEN first)
DEFAULT_PORT = 8000
# The ingress accepts this many times what the model deployment can hold (running + queued) before the Serve
# proxy queues in front of it, so a burst of 4x the queue is still answered by the ingress's JSON 503s.
INGRESS_HEADROOM = 4


def setting(default, help: str):
    """A ServeSettings field with its help (the flag's help and the config file's documentation)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Everything the service depends on. Each field is a key of the config file's `args` and a
    sentiment-serve flag (`--max-queued-requests`, ...)."""

    model: str | None = setting(
        None,
        "Adapter folder or ONNX export (inference/export.py) to serve. Default: the shipped trained_model/. "
        "Relative paths in the config file are relative to the project root.",
    )
    device: str | None = setting(
        None, "cpu, cuda or cuda:N for the model replicas (default: a GPU if the replica has one)."
    )
    precision: str = setting("auto", "auto, fp32, bf16 or int8, as for inference/predict.py (an export is fp32).")
    replicas: int = setting(1, "Model replicas, each a process holding one Predictor.")
    cpus_per_replica: float = setting(1.0, "Ray CPUs each model replica reserves (its PyTorch threads follow it).")
    gpus_per_replica: float = setting(0.0, "Ray GPUs each model replica reserves (e.g. 1 on a GPU node).")
    max_texts: int = setting(32, "Most reviews one /v1/predict request may carry.")
    max_text_chars: int = setting(50_000, "Longest review accepted, in characters (IMDb's longest is about 14,000).")
    max_body_bytes: int = setting(2 * 2**20, "Largest request body, in bytes; larger ones get 413 before being read.")
    uncertain_below: float = setting(0.75, "A prediction less confident than this is flagged uncertain (0 flags none).")
    batching: bool = setting(
        True, "Batch requests from many clients together (@serve.batch); off: one request per pass."
    )
    max_batch_size: int = setting(32, "Most reviews in one batch (at least max_texts, so every request fits in one).")
    forward_batch_size: int = setting(
        8,
        "Reviews per forward pass within a batch: the batch is sorted by length, so smaller passes pad short "
        "reviews less (on a CPU padding costs more than a larger pass gains; on a GPU set it to max_batch_size).",
    )
    batch_wait_timeout_s: float = setting(0.01, "How long a batch waits to fill after its first request, in seconds.")
    max_ongoing_requests: int = setting(32, "Requests one model replica holds at once (its batch fills from these).")
    max_queued_requests: int = setting(
        64, "Requests waiting for a model replica beyond those; more are refused at once with 503 and Retry-After."
    )
    retry_after_s: float = setting(1.0, "The Retry-After a refused request is given, in seconds.")

    @property
    def model_dir(self) -> Path:
        return Path(self.model) if self.model else DEFAULT_MODEL_DIR

    @property
    def ingress_max_ongoing_requests(self) -> int:
        return INGRESS_HEADROOM * (self.replicas * self.max_ongoing_requests + self.max_queued_requests)

    @property
    def retry_after_header(self) -> str:
        """Retry-After takes whole seconds: rounded up, so a client never comes back too early."""
        return str(max(math.ceil(self.retry_after_s), 1))

    def problems(self) -> list[str]:
        """Every problem with the settings, found before anything is deployed."""
        from inference.predictor import PRECISIONS  # imported here: the ingress replica never loads torch

        found = []
        if self.precision not in PRECISIONS:
            found.append(f"precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        positive = (
            "replicas",
            "max_texts",
            "max_text_chars",
            "max_batch_size",
            "forward_batch_size",
            "max_ongoing_requests",
        )
        for name in positive:
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1")
        if self.max_queued_requests < 1:
            found.append("max_queued_requests must be at least 1: an unbounded queue leaves requests to time out")
        if self.max_body_bytes < 1024:
            found.append("max_body_bytes must be at least 1024")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            found.append("cpus_per_replica and gpus_per_replica cannot be negative")
        if not 0 <= self.uncertain_below <= 1:
            found.append("uncertain_below must be a probability between 0 and 1")
        if self.batch_wait_timeout_s < 0 or not 0 < self.retry_after_s <= 3600:
            found.append("batch_wait_timeout_s must be at least 0 and retry_after_s between 0 and 3600 seconds")
        if self.batching and self.max_batch_size < self.max_texts:
            found.append(
                f"max_batch_size ({self.max_batch_size}) must be at least max_texts ({self.max_texts}): "
                "every request has to fit in one batch"
            )
        problem = model_problem(self.model_dir)
        if problem:
            found.append(f"model: {problem.rstrip('.')}")
        return found

    def checked(self) -> ServeSettings:
        """These settings, or one DataError listing every problem."""
        found = self.problems()
        if found:
            raise DataError("Invalid service settings: " + "; ".join(found) + ". See serving/config.yaml.")
        return self


def settings_from_args(args: dict, where: str = "the config file") -> ServeSettings:
    """ServeSettings from a config file's `args` (unknown keys and wrong types are refused, all at once).
    A relative `model` is relative to the project root, so the checked-in file works from any folder."""
    fields = {field.name for field in dataclasses.fields(ServeSettings)}
    types = typing.get_type_hints(ServeSettings)
    found = [f"unknown setting '{key}' (known: {', '.join(sorted(fields))})" for key in args if key not in fields]
    found += [
        f"{key} must be {typing_name(types[key])}, not {value!r}"
        for key, value in args.items()
        if key in fields and not fits(value, types[key])
    ]
    if found:
        raise DataError(f"{where}: " + "; ".join(found) + ".")
    settings = dict(args)
    if settings.get("model") and not Path(settings["model"]).is_absolute():
        settings["model"] = str(PROJECT_ROOT / settings["model"])
    return ServeSettings(**settings)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What a config file holds for sentiment-serve: where to listen and the application's settings."""

    settings: ServeSettings
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT


def load_config(path: str | Path = CONFIG_FILE) -> ServeConfig:
    """Read a Ray Serve config file: http_options' host and port, and the first application's `args`."""
    import yaml  # comes with ray[serve]

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--config {path}: no such file (the checked-in one is {CONFIG_FILE}).") from None
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise DataError(f"--config {path} could not be read as YAML: {error}") from error
    applications = document.get("applications") if isinstance(document, dict) else None
    if not applications or not isinstance(applications[0], dict):
        raise DataError(f"--config {path} has no `applications:` list; start from {CONFIG_FILE}.")
    http = document.get("http_options") or {}
    args = applications[0].get("args") or {}
    if not isinstance(http, dict) or not isinstance(args, dict):
        raise DataError(f"--config {path}: `http_options` and the application's `args` must be mappings.")
    return ServeConfig(
        settings_from_args(args, f"--config {path}"),
        host=str(http.get("host", DEFAULT_HOST)),
        port=int(http.get("port", DEFAULT_PORT)),
    )


def typing_name(expected) -> str:
    allowed = [t.__name__ for t in typing.get_args(expected) or (expected,)]
    return " or ".join("null" if name == "NoneType" else name for name in allowed)
