"""An adapter folder is untrusted input: the one place that reads what it says about itself and decides what
of it may load.

PEFT's own loader (`PeftModel.from_pretrained`) builds whatever adapter_config.json describes: it imports the
module named by `megatron_core` (a folder called `megatron` beside the app is importable), compiles
`target_modules` and `modules_to_save` as regular expressions (a catastrophic one hangs the load), allocates
r-sized matrices before any shape is checked, runs an SVD at load for `init_lora_weights: "pissa"`, replicates
layers, ... So nothing from the file reaches PEFT: it is read bounded, every field is checked against what this
project's training writes, and the `LoraConfig` is rebuilt from the project's own values (`lora_config_for`).

The same holds for the folder's tokenizer (a known class, never `auto_map`) and for the base model its
sentiment_config.json names (a hub repository other than the project's own is downloaded only on request).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from training.base import DEFAULT_BASE_MODEL, PACKAGED_BASES
from training.errors import ModelLoadError

# Bounds on what is read before it is parsed: the shipped adapter_config.json is 1.2 KB, its tokenizer.json 0.7 MB.
MAX_CONFIG_BYTES = 64 * 1024
MAX_TOKENIZER_BYTES = 64 * 1024 * 1024

FIX = "Retrain the adapter (python training/train.py) or restore the folder."

RANK_RANGE, ALPHA_RANGE, DROPOUT_RANGE = (1, 256), (1, 1024), (0.0, 0.9)

# adapter_config.json fields this project reads, each checked in read_adapter_record.
FIELDS_READ = frozenset(
    {
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "modules_to_save",
        "base_model_name_or_path",
        "inference_mode",
        "peft_version",
    }
)
# Every other field PEFT writes, with the values that leave plain LoRA unchanged: anything else makes PEFT import
# a module, match a pattern, compute at load, or build layers this project never trains. A field outside both
# lists is refused: nobody here has read what it does (tests check the lists cover the installed PEFT's fields).
INERT_FIELDS = {
    "alora_invocation_tokens": (None,),
    "alpha_pattern": ({}, None),
    "arrow_config": (None,),
    "auto_mapping": (None,),
    "bias": ("none",),
    "corda_config": (None,),
    "ensure_weight_tying": (False,),
    "eva_config": (None,),
    "exclude_modules": (None, []),
    "fan_in_fan_out": (False,),
    "init_lora_weights": (True,),
    "kasa_config": (None,),
    "layer_replication": (None,),
    "layers_pattern": (None,),
    "layers_to_transform": (None,),
    "loftq_config": ({}, None),
    "lora_bias": (False,),
    "lora_ga_config": (None,),
    "megatron_config": (None,),
    "megatron_core": ("megatron.core", None),  # PEFT's default, imported only with a megatron_config
    "monteclora_config": (None,),
    "qalora_group_size": (16,),
    "rank_pattern": ({}, None),
    "revision": (None,),
    "target_parameters": (None,),
    "trainable_token_indices": (None,),
    "use_bdlora": (None, False),
    "use_dora": (False,),
    "use_qalora": (False,),
    "use_rslora": (False,),
    "velora_config": (None,),
}
# Tokenizers built from tokenizer.json by transformers' own code: the ones this project's bases use.
TOKENIZER_CLASSES = (
    "BertTokenizer",
    "BertTokenizerFast",
    "DistilBertTokenizer",
    "DistilBertTokenizerFast",
    "RobertaTokenizer",
    "RobertaTokenizerFast",
)
# Bytes per element of each safetensors dtype, to check a header's declared sizes against the file.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclasses.dataclass(frozen=True)
class AdapterRecord:
    """What this project takes from adapter_config.json, each value checked; nothing else in the file is used."""

    source: Path
    rank: int
    alpha: int | float
    dropout: float
    target_modules: str | tuple[str, ...]  # compared with the project's own values, never used as given
    modules_to_save: tuple[str, ...]
    trained_on: str | None  # base_model_name_or_path: the base PEFT recorded at training


# ----------------------------------------------------------------------------- reading


def read_json_object(path: Path, limit: int = MAX_CONFIG_BYTES) -> dict:
    """A JSON object from a small UTF-8 file, refused unparsed when it holds more than `limit` bytes."""
    with open(path, "rb") as file:
        raw = file.read(limit + 1)
    if len(raw) > limit:
        raise ModelLoadError(
            f"{path} is {Path(path).stat().st_size:,} bytes; the configs this project writes are under "
            f"{limit // 1024} KiB. {FIX}"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested beyond the parser
        raise ModelLoadError(f"{path} is not valid UTF-8 JSON ({type(error).__name__}: {error}). {FIX}") from error
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} holds a JSON {type(data).__name__}, not an object. {FIX}")
    return data


def read_adapter_record(path: Path) -> AdapterRecord:
    """Check every field of an adapter_config.json; refuse, in one line naming the field, any this project
    would not have written. Fields that depend on the base (target_modules, modules_to_save) are compared
    with it in lora_config_for."""
    data = read_json_object(path)
    for field, value in data.items():
        if field in INERT_FIELDS:
            if not any(_same(value, inert) for inert in INERT_FIELDS[field]):
                allowed = " or ".join(_shown(inert) for inert in INERT_FIELDS[field])
                _refuse(path, field, value, f"this project loads plain LoRA only, where it is {allowed}")
        elif field not in FIELDS_READ:
            _refuse(path, field, value, "this project does not know that field")
    for field, expected in (("peft_type", "LORA"), ("task_type", "SEQ_CLS")):
        if data.get(field) != expected:
            _refuse(
                path, field, data.get(field), f'this project loads sequence-classification LoRA ("{expected}") only'
            )
    rank, alpha, dropout = data.get("r"), data.get("lora_alpha"), data.get("lora_dropout", 0.0)
    if not (_is_number(rank) and isinstance(rank, int) and RANK_RANGE[0] <= rank <= RANK_RANGE[1]):
        _refuse(path, "r", rank, f"the LoRA rank must be a whole number from {RANK_RANGE[0]} to {RANK_RANGE[1]}")
    if not (_is_number(alpha) and ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]):
        _refuse(path, "lora_alpha", alpha, f"it must be a number from {ALPHA_RANGE[0]} to {ALPHA_RANGE[1]}")
    if not (_is_number(dropout) and DROPOUT_RANGE[0] <= dropout <= DROPOUT_RANGE[1]):
        _refuse(path, "lora_dropout", dropout, f"it must be a number from {DROPOUT_RANGE[0]} to {DROPOUT_RANGE[1]}")
    targets = data.get("target_modules")
    if not (isinstance(targets, str) or _is_names(targets)):
        _refuse(path, "target_modules", targets, "it must be a module name pattern or a list of module names")
    to_save = data.get("modules_to_save") or []
    if not _is_names(to_save):
        _refuse(path, "modules_to_save", to_save, "it must be a list of module names")
    trained_on = data.get("base_model_name_or_path")
    if trained_on is not None and not isinstance(trained_on, str):
        _refuse(path, "base_model_name_or_path", trained_on, "it must be the base model's id")
    for field, kind in (("inference_mode", bool), ("peft_version", str)):
        if field in data and not isinstance(data[field], kind):
            _refuse(path, field, data[field], f"it must be a {kind.__name__}")
    return AdapterRecord(
        path, rank, alpha, dropout, targets if isinstance(targets, str) else tuple(targets), tuple(to_save), trained_on
    )


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each stored tensor's shape, read from the file's header alone (no tensor is loaded). The sizes the header
    declares must fit in the file, so loading the weights later allocates no more than the file holds."""
    from safetensors import safe_open

    shapes, declared = {}, 0
    with safe_open(path, framework="pt") as weights:
        for key in weights.keys():
            tensor = weights.get_slice(key)
            shape, dtype = tuple(tensor.get_shape()), tensor.get_dtype()
            if dtype not in DTYPE_BYTES:
                raise ModelLoadError(f"{path} stores {key} as {dtype}, which no adapter made here holds. {FIX}")
            shapes[key] = shape
            declared += math.prod(shape) * DTYPE_BYTES[dtype]
    size = Path(path).stat().st_size
    if declared > size:
        raise ModelLoadError(
            f"{path}'s header declares {declared:,} bytes of tensors but the file holds {size:,}: it is cut short "
            f"or forged. {FIX}"
        )
    return shapes


# ----------------------------------------------------------------------------- checking against the weights and the base


def check_rank(record: AdapterRecord, shapes: dict[str, tuple[int, ...]]) -> None:
    """r must be the rank of every stored LoRA matrix: PEFT allocates r-sized matrices before it reads a weight."""
    for key, shape in shapes.items():
        if key.endswith(".lora_A.weight"):  # (rank, in)
            stored = shape[0] if len(shape) == 2 else None
        elif key.endswith(".lora_B.weight"):  # (out, rank)
            stored = shape[1] if len(shape) == 2 else None
        else:
            continue
        if stored != record.rank:
            raise ModelLoadError(
                f"{record.source} sets r = {record.rank}, but the stored weights have rank {stored} ({key} is "
                f"{shape}). {FIX}"
            )


def lora_config_for(record: AdapterRecord, known_targets: list, head: list[str]):
    """The LoraConfig to load `record` with, built from this project's values: its target_modules must equal
    one of `known_targets` (what training here writes for this base; compared as values, never compiled or
    matched), and what it saves whole must be among `head` (the classification head's modules)."""
    from peft import LoraConfig, TaskType

    targets = _matching_target(record.target_modules, known_targets)
    if targets is None:
        _refuse(
            record.source,
            "target_modules",
            record.target_modules,
            "that is not a value this project's training writes for this base (attention or all-linear targets)",
        )
    for name in record.modules_to_save:
        if name not in head:
            _refuse(
                record.source,
                "modules_to_save",
                name,
                f"only the classification head ({', '.join(dict.fromkeys(head))}) is saved whole",
            )
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=record.rank,
        lora_alpha=record.alpha,
        lora_dropout=record.dropout,
        target_modules=targets,
        modules_to_save=[name for name in dict.fromkeys(head) if name in record.modules_to_save],
        inference_mode=True,
        base_model_name_or_path=record.trained_on,
    )


def check_stored_keys(folder: Path, stored: set[str], expected: set[str]) -> None:
    """The stored weights must be exactly the ones the rebuilt adapter has: none missing, none left over."""
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        examples = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        examples += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        raise ModelLoadError(
            f"The weights of the adapter at {folder} do not match the LoRA layers its config describes: "
            f"{', '.join(examples)}. {FIX}"
        )


def base_needs_permission(base_model: str) -> bool:
    """Whether loading `base_model` downloads a repository the user has not chosen: anything but a local folder
    (or a path, which then fails as a missing folder), the packaged base or the project's default base."""
    if base_model.startswith((".", "/", "~")) or Path(base_model).expanduser().is_dir():
        return False
    return base_model not in {DEFAULT_BASE_MODEL, *PACKAGED_BASES, *PACKAGED_BASES.values()}


def check_base_allowed(base_model, allow_hub_base: bool, source: Path) -> None:
    """An adapter folder names its base; a hub repository other than the project's own needs the user's word."""
    if not isinstance(base_model, str) or not 0 < len(base_model) <= 300:
        _refuse(source, "base_model", base_model, "it must be a model id or folder of at most 300 characters")
    if base_needs_permission(base_model) and not allow_hub_base:
        raise ModelLoadError(
            f"{source} names base model {_shown(base_model)}, which would be downloaded from the Hugging Face Hub; "
            f"without asking, an adapter may name only the packaged base ({', '.join(PACKAGED_BASES)}), "
            f"{DEFAULT_BASE_MODEL} or a local folder. If you trust that repository, pass --allow-hub-base "
            f"(allow_hub_base=True in Python)."
        )


def load_adapter_tokenizer(folder: Path):
    """The folder's tokenizer, built by transformers' own class for a known tokenizer_class: never a class the
    folder names in auto_map, never code shipped with it."""
    import transformers

    path = folder / "tokenizer_config.json"
    config = read_json_object(path)
    if "auto_map" in config:
        _refuse(path, "auto_map", config["auto_map"], "that asks transformers to run code shipped with the adapter")
    name = config.get("tokenizer_class")
    if name not in TOKENIZER_CLASSES:
        _refuse(path, "tokenizer_class", name, f"this project loads only {', '.join(TOKENIZER_CLASSES)}")
    vocabulary = folder / "tokenizer.json"
    if vocabulary.exists() and vocabulary.stat().st_size > MAX_TOKENIZER_BYTES:
        raise ModelLoadError(
            f"{vocabulary} is {vocabulary.stat().st_size:,} bytes, more than the "
            f"{MAX_TOKENIZER_BYTES // 2**20} MiB any tokenizer here needs. {FIX}"
        )
    return getattr(transformers, name).from_pretrained(folder, local_files_only=True, trust_remote_code=False)


# ----------------------------------------------------------------------------- helpers


def _matching_target(value, known_targets: list):
    """The project's own value equal to `value` (a pattern as a string, a list of names as a set), or None."""
    for known in known_targets:
        if isinstance(known, str) or isinstance(value, str):
            if value == known:
                return known
        elif len(set(value)) == len(value) and set(value) == set(known):
            return list(known)
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def _same(value, inert) -> bool:
    """Equal and of the same type: JSON's 1 is not true, nor 0 false."""
    return type(value) is type(inert) and value == inert


def _shown(value, width: int = 60) -> str:
    """A value as JSON on one line, cut to `width` characters: messages quote what the file says."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _refuse(path: Path, field: str, value, why: str):
    raise ModelLoadError(f"{path} sets {field} = {_shown(value)}, but {why}. {FIX}")
