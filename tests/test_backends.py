"""One Predictor, backends behind it: the folder chooses PyTorch or onnxruntime; 'auto' chooses the precision by
this CPU and by the model's measured int8 gate; the CPU's instructions are read in one place; MPS is known."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from inference import int8
from inference.int8 import Int8Scheme, gate_passed, linear_role, read_int8_schemes, write_int8_schemes
from inference.predictor import Predictor, choose_precision
from training import device as device_module
from training.device import cpu_features
from training.errors import ModelLoadError
from training.paths import PROJECT_ROOT

AMX_XEON = "flags\t\t: fpu sse4_1 avx avx2 fma avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"
AVX2_LAPTOP = "processor\t: 0\nflags\t\t: fpu sse4_1 avx avx2 fma\n"
PASSED = {"reviews": 2500, "labels_changed": 7, "accuracy_change_points": -0.04, "split": "validation"}


def gated(tmp_path, adapter, keep_fp32=("pooler", "classifier"), gate=PASSED):
    """A copy of `adapter` whose int8.json records a PyTorch scheme with this gate."""
    folder = tmp_path / "gated"
    shutil.copytree(adapter, folder)
    write_int8_schemes(folder, {"pytorch": Int8Scheme("pytorch", tuple(keep_fp32), gate=dict(gate))}, {"by": "a test"})
    return folder


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on a CPU with these instructions (and no switches set)."""

    def pretend(cpuinfo: str):
        monkeypatch.delenv(device_module.CPU_BF16_SWITCH, raising=False)
        monkeypatch.delenv(device_module.CPU_INT8_SWITCH, raising=False)
        monkeypatch.delenv(device_module.ONEDNN_ISA_CAP, raising=False)
        features = cpu_features(cpuinfo, {})
        monkeypatch.setattr(device_module, "cpu_features", lambda: features)
        monkeypatch.setattr("inference.predictor.cpu_features", lambda: features)

    return pretend


# ----------------------------------------------------------------------------- the CPU, in one function


def test_cpu_features_reads_the_flags_and_honours_onednns_cap():
    assert cpu_features(AMX_XEON, {}) >= {"avx2", "avx512_vnni", "amx_bf16", "amx_int8"}
    assert "fpu" not in cpu_features(AMX_XEON, {})  # only the matrix instructions
    without_amx = cpu_features(AMX_XEON, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert "avx512_vnni" in without_amx and not without_amx & {"amx_bf16", "amx_int8", "avx512_bf16"}
    assert cpu_features(AMX_XEON, {"ONEDNN_MAX_CPU_ISA": "avx2"}) == {"avx", "avx2", "fma"}
    assert cpu_features(AMX_XEON, {"ONEDNN_MAX_CPU_ISA": "ALL"}) == cpu_features(AMX_XEON, {})
    assert cpu_features(AVX2_LAPTOP, {}) == {"avx", "avx2", "fma"}
    assert isinstance(cpu_features(), frozenset)  # this machine: whatever it has


def test_bf16_needs_amx_int8_needs_avx2_and_each_switch_turns_its_own_off(cpu, monkeypatch):
    cpu(AMX_XEON)
    assert device_module.bf16_is_fast() and device_module.int8_is_fast()
    monkeypatch.setenv(device_module.CPU_BF16_SWITCH, "0")  # "as on a CPU without bf16 hardware": int8 is still there
    assert not device_module.bf16_is_fast() and device_module.int8_is_fast()
    monkeypatch.setenv(device_module.CPU_INT8_SWITCH, "0")
    assert not device_module.int8_is_fast()
    cpu(AVX2_LAPTOP)
    assert not device_module.bf16_is_fast() and device_module.int8_is_fast()
    cpu("flags\t\t: fpu sse4_1\n")
    assert not device_module.int8_is_fast()


def test_the_device_picker_knows_apples_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "mps_available", lambda: True)
    assert device_module.pick_device().type == "mps" and device_module.pick_device("mps").type == "mps"
    assert device_module.pick_device("cpu").type == "cpu"
    assert device_module.describe_device(torch.device("mps")) == "Apple GPU (MPS)"
    monkeypatch.setattr(device_module, "mps_available", lambda: False)
    assert device_module.pick_device().type == "cpu"
    with pytest.raises(ModelLoadError, match="MPS.*--device cpu"):
        device_module.pick_device("mps")
    assert choose_precision("auto", torch.device("mps")) == (
        "fp32",
        "auto: exact fp32 on mps (faster precisions there are not measured)",
    )
    with pytest.raises(ModelLoadError, match="CPU only"):
        choose_precision("int8", torch.device("mps"))


# ----------------------------------------------------------------------------- 'auto', by measurement


def test_auto_is_bf16_with_amx_gated_int8_with_avx2_or_vnni_and_fp32_otherwise(cpu, monkeypatch):
    passed, failed = Int8Scheme("pytorch", gate=PASSED), Int8Scheme("pytorch", gate={**PASSED, "labels_changed": 40})
    onnx = Int8Scheme("onnxruntime", gate=PASSED)
    cpu(AMX_XEON)
    assert choose_precision("auto", "cpu", scheme=passed)[0] == "bf16"
    assert choose_precision("auto", "cpu", ("fp32", "int8"), onnx)[0] == "int8"  # an export has no bf16: AMX int8
    monkeypatch.setenv(device_module.CPU_BF16_SWITCH, "0")
    precision, why = choose_precision("auto", "cpu", scheme=passed)
    assert precision == "int8" and "7 of 2,500 validation labels changed" in why and "passed the gate" in why
    assert choose_precision("auto", "cpu", scheme=failed) == (
        "fp32", "auto: SENTIMENT_CPU_BF16=0 (as on a CPU without AMX); the model's int8 scheme did not pass the gate "
        "(40 of 2,500 validation labels changed, accuracy -0.04 points: failed the gate): exact fp32",
    )  # fmt: skip
    assert "never measured" in choose_precision("auto", "cpu", scheme=None)[1]
    cpu(AVX2_LAPTOP)
    assert choose_precision("auto", "cpu", scheme=passed)[0] == "int8"  # fbgemm's 7-bit activations: exact on AVX2
    # onnxruntime's 8-bit weights can saturate AVX2's 16-bit sums: its gate holds with VNNI or AMX only.
    precision, why = choose_precision("auto", "cpu", ("fp32", "int8"), onnx)
    assert precision == "fp32" and "avx512_vnni" in why
    assert choose_precision("int8", "cpu", scheme=failed) == ("int8", f"asked for; its int8 scheme: {failed.summary()}")
    assert choose_precision("fp32", "cpu", scheme=passed) == ("fp32", "asked for")
    with pytest.raises(ValueError, match="Unknown precision"):
        choose_precision("fp16", "cpu")


def test_a_scheme_that_passed_its_gate_but_failed_the_test_check_is_served_only_when_asked_for(
    tiny_adapter, tmp_path, cpu
):
    failed_check = {"reviews": 1000, "labels_changed": 7, "accuracy_change_points": -0.3}
    held_check = {"reviews": 1000, "labels_changed": 2, "accuracy_change_points": 0.0}
    cpu(AVX2_LAPTOP)
    scheme = Int8Scheme("pytorch", gate=PASSED, check=failed_check)
    assert (scheme.passed, scheme.held, Int8Scheme("pytorch", gate=PASSED).held) == (True, False, None)
    precision, why = choose_precision("auto", "cpu", scheme=scheme)
    assert precision == "fp32" and "7 of 1,000 test labels changed, accuracy -0.30 points: failed" in why
    assert choose_precision("auto", "cpu", scheme=Int8Scheme("pytorch", gate=PASSED, check=held_check))[0] == "int8"
    assert choose_precision("int8", "cpu", scheme=scheme)[0] == "int8"
    # The check travels in int8.json and is read back, recomputed from its figures.
    folder = tmp_path / "checked"
    shutil.copytree(tiny_adapter, folder)
    write_int8_schemes(folder, {"pytorch": scheme}, {"by": "a test"})
    assert read_int8_schemes(folder)["pytorch"].held is False
    assert Predictor.from_pretrained(folder, device="cpu").precision == "fp32"


def test_a_gated_adapter_loads_in_int8_by_default_and_keeps_its_sensitive_layers_exact(
    tiny_adapter, tmp_path, cpu, monkeypatch
):
    import torch

    folder = gated(tmp_path, tiny_adapter, keep_fp32=("pooler", "classifier", "layer.1.ffn.out"))
    cpu(AVX2_LAPTOP)
    predictor = Predictor.from_pretrained(folder, device="cpu")
    info = predictor.info()
    assert predictor.precision == info["precision"] == "int8" and info["backend"] == "pytorch"
    assert "passed the gate" in info["precision_reason"] and info["int8"]["keep_fp32"][-1] == "layer.1.ffn.out"
    exact = {name for name, module in predictor.model.named_modules() if type(module) is torch.nn.Linear}
    assert exact == {"distilbert.transformer.layer.1.ffn.lin2", "pre_classifier", "classifier"}
    monkeypatch.setenv(device_module.CPU_INT8_SWITCH, "0")  # what the tests' conftest may set: exact fp32 again
    assert Predictor.from_pretrained(folder, device="cpu").precision == "fp32"


# ----------------------------------------------------------------------------- the int8 record


def test_the_gate_allows_half_a_percent_of_the_labels_and_three_tenths_of_a_point():
    assert gate_passed(12, 2500, -0.3) and not gate_passed(13, 2500, 0.0) and not gate_passed(0, 2500, -0.31)
    assert not gate_passed(0, 0, 0.0)
    assert (int8.MAX_LABELS_CHANGED_FRACTION, int8.MAX_ACCURACY_DROP_POINTS) == (0.005, 0.3)


def test_roles_name_the_same_matrices_in_bert_and_distilbert():
    pairs = {
        "bert.encoder.layer.0.attention.self.query": "layer.0.attention.qkv",
        "distilbert.transformer.layer.0.attention.v_lin": "layer.0.attention.qkv",
        "bert.encoder.layer.2.attention.output.dense": "layer.2.attention.output",
        "distilbert.transformer.layer.2.attention.out_lin": "layer.2.attention.output",
        "bert.encoder.layer.11.intermediate.dense": "layer.11.ffn.in",
        "distilbert.transformer.layer.5.ffn.lin1": "layer.5.ffn.in",
        "bert.encoder.layer.5.output.dense": "layer.5.ffn.out",
        "distilbert.transformer.layer.5.ffn.lin2": "layer.5.ffn.out",
        "bert.pooler.dense": "pooler",
        "pre_classifier": "pooler",
        "classifier": "classifier",
        "some.other.proj": "some.other.proj",
    }
    assert {name: linear_role(name) for name in pairs} == pairs


def test_the_record_is_checked_and_its_verdict_recomputed(tiny_adapter, tmp_path):
    folder = gated(tmp_path, tiny_adapter, gate={**PASSED, "labels_changed": 50, "passed": True})
    scheme = read_int8_schemes(folder)["pytorch"]
    assert scheme.passed is False  # the figures decide, not a "passed" someone wrote
    record = json.loads((folder / int8.INT8_RECORD_FILE).read_text(encoding="utf-8"))
    record["schemes"]["pytorch"]["keep_fp32"] = ["__import__('os')"]
    (folder / int8.INT8_RECORD_FILE).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="keep_fp32 must be a list of roles"):
        read_int8_schemes(folder)
    (folder / int8.INT8_RECORD_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="precision_check.py"):
        Predictor.from_pretrained(folder, device="cpu")  # 'auto' reads it
    assert Predictor.from_pretrained(folder, device="cpu", precision="fp32").precision == "fp32"  # fp32 never does
    assert read_int8_schemes(tiny_adapter) == {}


# ----------------------------------------------------------------------------- one Predictor, two backends


def test_the_predictor_module_imports_no_torch_and_the_onnx_predictor_class_is_gone():
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'peft', 'pandas'):\n"
        "    sys.modules[name] = None\n"
        "import inference.predictor, inference.onnx_backend, inference.int8, training.device\n"
        "print(sorted(n for n in ('torch', 'pandas') if sys.modules.get(n) is not None))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
    assert importlib.util.find_spec("inference.onnx_predictor") is None
    assert importlib.util.find_spec("inference.scoring") is None


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="requirements-export.txt not installed")
def test_both_backends_give_the_same_figures_through_the_same_loop(tiny_adapter, tmp_path):
    from inference import export

    folder = tmp_path / "exported"
    export.main(export.ExportConfig(model=tiny_adapter, output=folder))
    adapter, exported = Predictor.from_pretrained(tiny_adapter, "cpu", "fp32"), Predictor.from_pretrained(folder)
    assert (type(adapter), adapter.info()["backend"], exported.info()["backend"]) == (
        Predictor,
        "pytorch",
        "onnxruntime",
    )
    texts = ["A superb, moving film.", "Dreadful.", "It was fine I guess, a bit long " * 200]
    for mode in ("truncate", "sliding"):
        np.testing.assert_allclose(
            exported.with_long_reviews(mode).predict_logits(texts, batch_size=2),
            adapter.with_long_reviews(mode).predict_logits(texts, batch_size=2),
            atol=1e-4,
        )
    assert [p.label for p in exported.predict(texts)] == [p.label for p in adapter.predict(texts)]
    assert exported.info()["precision_reason"] and adapter.info()["precision_reason"] == "asked for"
