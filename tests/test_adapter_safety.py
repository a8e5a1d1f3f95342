"""An adapter folder is untrusted: hostile adapter_config.json, sentiment_config.json and tokenizer_config.json
files are refused in one line, before PEFT or transformers act on them, and good adapters still load exactly
as PEFT's own loader loads them (training.adapter_config; the cases are listed in docs/faults.md).

The loads that, were a check to regress, would run the folder's code, allocate 128 GB or never return run in
one child process: there the payload is importable as `streamlit run` would make it, an address-space limit
turns the allocation into an error instead of swapping this machine, and a hang costs a timeout, not the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SHIPPED_MODEL_DIR
from training.adapter_config import FIELDS_READ, INERT_FIELDS
from training.errors import ModelLoadError
from training.model import SentimentConfig, load_classifier

TEXTS = ["A superb, moving film.", "Dreadful and far too long; I want my two hours back."]


def hostile_copy(adapter: Path, folder: Path, **adapter_config) -> Path:
    """A copy of `adapter` whose adapter_config.json has `adapter_config`'s fields set."""
    shutil.copytree(adapter, folder)
    edit_json(folder / "adapter_config.json", adapter_config)
    return folder


def edit_json(path: Path, changes: dict) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **changes}), encoding="utf-8")


def refusal(folder: Path, **options) -> str:
    """The one-line message load_classifier refuses `folder` with."""
    with pytest.raises(ModelLoadError) as error:
        load_classifier(folder, **options)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def peft_never_reads_the_folder(monkeypatch):
    """PEFT's own readers of an adapter folder fail the test if called."""
    forbid_peft_reading(monkeypatch)


def forbid_peft_reading(monkeypatch) -> None:
    """Make PEFT's own readers of an adapter folder fail the test. Training reloads its best checkpoint through
    them (load_best_model_at_end, its own files), so a test must train before calling this."""
    import peft
    import peft.config
    import peft.peft_model

    def fail(*args, **kwargs):
        pytest.fail("PEFT was asked to read the adapter folder")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", fail)
    monkeypatch.setattr(peft.config.PeftConfigMixin, "from_pretrained", fail)
    monkeypatch.setattr(peft.peft_model, "load_peft_weights", fail)


# ----------------------------------------------------------------------------- good adapters load as before


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_good_adapters_load_as_peft_loads_them(which, request, monkeypatch):
    from peft import PeftModel
    from transformers import AutoTokenizer

    from training.base import load_base_classifier

    folder = SHIPPED_MODEL_DIR if which == "shipped" else request.getfixturevalue("tiny_adapter")
    forbid_peft_reading(monkeypatch)
    exact, tokenizer, config = load_classifier(folder, merge=False)
    merged, _, _ = load_classifier(folder, merge=True)
    monkeypatch.undo()  # the reference below is PEFT reading the folder itself

    batch = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(tokenizer(TEXTS, padding=True, return_tensors="pt")["input_ids"], batch["input_ids"])
    reference = PeftModel.from_pretrained(load_base_classifier(config.base_model, labels=config.labels), folder)
    with torch.no_grad():
        torch.testing.assert_close(exact(**batch).logits, reference.eval()(**batch).logits, rtol=0, atol=1e-6)
        expected_merged = reference.merge_and_unload()(**batch).logits
        torch.testing.assert_close(merged(**batch).logits, expected_merged, rtol=0, atol=1e-6)


def test_an_all_linear_adapter_on_another_architecture_still_loads(tmp_path):
    """PEFT saves "all-linear" resolved to layer names; they must match the base's, compared as values."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    from training.base import load_tokenizer
    from training.model import LoraSettings, build_classifier, save_adapter

    base = tmp_path / "tiny_electra"
    shape = dict(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    ElectraForSequenceClassification(ElectraConfig(**shape, intermediate_size=64)).save_pretrained(base)
    model = build_classifier(str(base), LoraSettings(rank=4, alpha=8, targets="all-linear")).eval()
    with torch.no_grad():  # B starts at zero: make the LoRA update count
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    saved = tmp_path / "adapter"
    save_adapter(model, load_tokenizer("minilm"), saved, SentimentConfig(str(base), 64, "head_tail"))
    assert isinstance(json.loads((saved / "adapter_config.json").read_text())["target_modules"], list)
    loaded, tokenizer, _ = load_classifier(saved, merge=False)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)


def test_every_field_the_installed_peft_writes_is_judged():
    """A field a newer PEFT adds is refused until someone decides here whether it is inert."""
    from peft import LoraConfig

    written = {field.name for field in dataclasses.fields(LoraConfig)} - {"runtime_config"}  # never saved
    assert written - FIELDS_READ - set(INERT_FIELDS) == set()


# ----------------------------------------------------------------------------- hostile adapter_config.json


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"init_lora_weights": "pissa"}, 'sets init_lora_weights = "pissa"'),
        ({"init_lora_weights": "olora"}, 'sets init_lora_weights = "olora"'),
        ({"layer_replication": [[0, 2], [0, 2]]}, "sets layer_replication = [[0, 2], [0, 2]]"),
        ({"use_dora": True}, "sets use_dora = true"),
        ({"rank_pattern": {"q_lin": 64}}, 'sets rank_pattern = {"q_lin": 64}'),
        ({"launch_missiles": 1}, "sets launch_missiles = 1, but this project does not know that field"),
        ({"r": 8}, "sets r = 8, but the stored weights have rank 4"),
        (
            {"modules_to_save": ["pre_classifier", "classifier", "distilbert.transformer.layer.0"]},
            'sets modules_to_save = "distilbert.transformer.layer.0", but only the classification head',
        ),
        ({"target_modules": ["q_lin", "lin1"]}, 'sets target_modules = ["q_lin", "lin1"], but that is not a value'),
    ],
    ids=[
        "pissa",
        "olora",
        "layer_replication",
        "use_dora",
        "rank_pattern",
        "unknown_field",
        "r_mismatch",
        "modules_to_save_encoder",
        "target_modules_other",
    ],
)
def test_hostile_adapter_config_is_refused_in_one_line(
    changes, words, tiny_adapter, tmp_path, peft_never_reads_the_folder
):
    message = refusal(hostile_copy(tiny_adapter, tmp_path / "hostile", **changes))
    assert words in message and "adapter_config.json" in message
    assert message.endswith("Retrain the adapter (python training/train.py) or restore the folder.")


def test_a_10_mb_adapter_config_is_refused_unparsed(tiny_adapter, tmp_path, monkeypatch):
    folder = hostile_copy(tiny_adapter, tmp_path / "hostile")
    path = folder / "adapter_config.json"
    path.write_text(path.read_text(encoding="utf-8") + " " * 10_000_000, encoding="utf-8")  # valid JSON, 10 MB
    real_loads = json.loads

    def loads(text, *args, **kwargs):
        assert len(text) < 10_000_000, "the 10 MB file was parsed"
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", loads)
    message = refusal(folder)
    assert "adapter_config.json is 10,001," in message and "the configs this project writes are under 64 KiB" in message


def test_pickle_weights_get_the_same_checks(pickled_adapter, tmp_path):
    folder = hostile_copy(pickled_adapter, tmp_path / "hostile", init_lora_weights="pissa")
    assert 'sets init_lora_weights = "pissa"' in refusal(folder, trust_pickle=True)
    folder = hostile_copy(pickled_adapter, tmp_path / "mismatched", r=2)
    assert "sets r = 2, but the stored weights have rank 4" in refusal(folder, trust_pickle=True)


# ----------------------------------------------------------------------------- the base model and the tokenizer


HUB_BASE = "someone/sentiment-base"


def test_a_hub_base_needs_the_users_word(tiny_adapter, tmp_path, monkeypatch):
    from training import model as model_module

    folder = hostile_copy(tiny_adapter, tmp_path / "hostile", base_model_name_or_path=HUB_BASE)
    edit_json(folder / "sentiment_config.json", {"base_model": HUB_BASE})
    real_load = model_module.load_base_classifier
    monkeypatch.setattr(model_module, "load_base_classifier", lambda *a, **k: pytest.fail("a base was loaded"))
    message = refusal(folder)
    assert f'names base model "{HUB_BASE}", which would be downloaded' in message
    assert "pass --allow-hub-base (allow_hub_base=True in Python)" in message

    # With the user's word, the load goes on to the usual hub path, which offline fails fast with its own fix.
    monkeypatch.setattr(model_module, "load_base_classifier", real_load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = refusal(folder, allow_hub_base=True)
    assert f"Cannot download base model '{HUB_BASE}': HF_HUB_OFFLINE is set" in message


def test_the_predictor_and_the_option_pass_the_permission_through(monkeypatch):
    from inference import options, predictor, torch_backend

    class Asked(Exception):
        pass

    def load_classifier(*args, **kwargs):
        raise Asked(kwargs)

    monkeypatch.setattr(torch_backend, "load_classifier", load_classifier)  # the PyTorch backend loads adapters
    with pytest.raises(Asked) as asked:
        predictor.Predictor.from_pretrained("adapter", device="cpu", precision="fp32", allow_hub_base=True)
    assert asked.value.args[0]["allow_hub_base"] is True
    parser = argparse.ArgumentParser()
    options.add_allow_hub_base(parser)
    assert parser.parse_args(["--allow-hub-base"]).allow_hub_base and not parser.parse_args([]).allow_hub_base


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}, "sets auto_map = "),
        ({"tokenizer_class": "EvilTokenizer"}, 'sets tokenizer_class = "EvilTokenizer", but this project loads only'),
    ],
    ids=["auto_map", "unknown_class"],
)
def test_a_tokenizer_that_asks_for_custom_code_is_refused(changes, words, tiny_adapter, tmp_path):
    folder = hostile_copy(tiny_adapter, tmp_path / "hostile")
    edit_json(folder / "tokenizer_config.json", changes)
    (folder / "evil.py").write_text("raise SystemExit('custom tokenizer code ran')\n", encoding="utf-8")
    message = refusal(folder)
    assert words in message and "tokenizer_config.json" in message


# ----------------------------------------------------------------------------- code, memory and time: in a child

# Loads each folder given, in order, printing one JSON line per load as it ends: the message, the seconds it
# took and the child's peak memory so far. The address-space limit turns an allocation that escaped the checks
# into an error in the child instead of this machine swapping.
CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
from training.model import load_classifier
for folder in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_classifier(folder)
        message = "loaded"
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"folder": folder, "message": message, "seconds": time.perf_counter() - start,
                      "peak_mib": peak_mib}), flush=True)
"""
CHILD_TIMEOUT = 120  # seconds; the loads take under 20 together on a busy 2-core machine (mostly imports)
PAYLOAD = """
from pathlib import Path
Path(__file__).with_name("PAYLOAD_RAN").write_text("the adapter's code ran")
"""
# Backtracks exponentially in the length of the name it is matched against: 2**40 steps on a 40-character name.
CATASTROPHIC = "(.|.)*X"


@pytest.fixture(scope="module")
def child_loads(tiny_adapter, tmp_path_factory) -> dict[str, dict]:
    """One child process, run from the folder holding the adapters (as `streamlit run` puts the project root on
    sys.path), loads: good (a plain copy, which also pays for the imports), megatron (adapter_config.json points
    PEFT's megatron_core at megatron/payload.py), r_absurd (r = 10**9) and regex (a catastrophic
    target_modules), last because unchecked it never returns."""
    root = tmp_path_factory.mktemp("child_loads")
    folders = {
        "good": hostile_copy(tiny_adapter, root / "good"),
        "megatron": hostile_copy(
            tiny_adapter, root / "megatron", megatron_config={"x": 1}, megatron_core="megatron.payload"
        ),
        "r_absurd": hostile_copy(tiny_adapter, root / "r_absurd", r=10**9),
        "regex": hostile_copy(tiny_adapter, root / "regex", target_modules=CATASTROPHIC),
    }
    (root / "megatron" / "payload.py").write_text(PAYLOAD, encoding="utf-8")
    command = [sys.executable, "-c", CHILD, *(folder.name for folder in folders.values())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        output = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        lines = output.stdout
    except subprocess.TimeoutExpired as timeout:  # keep what the child reported before it hung
        lines = (timeout.stdout or b"").decode() if isinstance(timeout.stdout, bytes) else timeout.stdout or ""
    results = {json.loads(line)["folder"]: json.loads(line) for line in lines.splitlines() if line.startswith("{")}
    assert results.get("good", {}).get("message") == "loaded", f"the child could not load a good adapter: {lines}"
    return {"root": root, **results}


def test_megatron_core_cannot_import_code_from_the_folder(child_loads):
    assert not (child_loads["root"] / "megatron" / "PAYLOAD_RAN").exists()
    message = child_loads["megatron"]["message"]
    assert message.startswith("ModelLoadError: ") and "\n" not in message
    assert "sets megatron_config = {" in message and "this project loads plain LoRA only" in message


def test_an_absurd_rank_is_refused_before_anything_is_allocated(child_loads):
    result = child_loads["r_absurd"]
    assert "sets r = 1000000000, but the LoRA rank must be a whole number from 1 to 256" in result["message"]
    assert result["peak_mib"] < 2048  # a 10**9-rank matrix of the tiny base alone would be 128 GB


def test_a_catastrophic_target_pattern_is_refused_without_being_matched(child_loads):
    result = child_loads.get("regex")
    assert result is not None, f"loading a catastrophic target_modules did not return within {CHILD_TIMEOUT} s"
    assert f'sets target_modules = "{CATASTROPHIC}"' in result["message"] and result["seconds"] < 5


def test_training_refuses_settings_its_adapter_could_not_be_loaded_with():
    from training.config import TrainConfig

    assert TrainConfig(lora_rank=300, lora_alpha=2000, lora_dropout=0.95).problems()[:3] == [
        "--lora-rank must be from 1 to 256",
        "--lora-alpha must be from 1 to 1024",
        "--lora-dropout must be from 0.0 to 0.9",
    ]
    assert not [problem for problem in TrainConfig(lora_rank=256, lora_alpha=1024).problems() if "lora" in problem]
