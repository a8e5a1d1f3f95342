"""The ONNX export: inference/export.py writes a self-describing folder (a fused fp32 graph, its int8 twin, the
tokenizer and the record), published in one rename, and `Predictor` serves it with onnxruntime, tokenizers and
numpy alone (checked in a process where importing torch fails), giving the PyTorch Predictor's logits within
1e-4 and its labels on a fixed sample of IMDb test reviews.

Skipped only where onnxruntime is not installed and CI is not set: CI installs requirements-export.txt."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHIPPED_MODEL_DIR
from training.paths import PROJECT_ROOT

if importlib.util.find_spec("onnxruntime") is None and not os.environ.get("CI"):
    pytest.skip("onnxruntime is not installed: pip install -r requirements-export.txt", allow_module_level=True)

from inference import export, onnx_backend  # noqa: E402
from inference.onnx_backend import ExportError, ExportRecord, is_export  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from training.errors import ModelLoadError  # noqa: E402
from training.text import EmptyTextError, TextError  # noqa: E402

LOGIT_TOLERANCE = 1e-4
TINY_LOGIT_TOLERANCE = 2e-7  # the tiny model's logits are about 0.01: its fp32 graph and PyTorch agree far closer
# Edge cases beside the IMDb sample: one word, far over 512 tokens, unicode and emoji, markup, digits only.
EDGE_CASES = [
    "Great.",
    "Superb",
    " ".join(["An overlong, tedious and utterly pointless remake that nobody asked for."] * 80)
    + " Still, the final scene is wonderful.",
    "Ce film était magnifique ! Les acteurs sont formidables. 素晴らしい映画でした。 Очень хороший фильм 🎬👍❤️",
    "Not bad at all.<br /><br />The ending drags, but it is <i>worth</i> a look.",
    "10/10 !!!",
]
# Run in a fresh interpreter where `import torch` (and pandas, transformers, peft) fails: serving an export must
# need none of them. Prints logits and labels as JSON.
TORCH_FREE_SCRIPT = """
import json, sys
for name in ("torch", "transformers", "peft", "pandas", "sklearn", "scipy"):
    sys.modules[name] = None  # `import name` now raises ImportError
from inference.predictor import Predictor
folder, mode, precision = sys.argv[1], sys.argv[2], sys.argv[3]
texts = json.loads(sys.stdin.read())
predictor = Predictor.from_pretrained(folder, long_reviews=mode, precision=precision)
logits = predictor.predict_logits(texts, batch_size=8)
predictions = predictor.predict(texts, batch_size=8)
loaded = sorted(name for name in ("torch", "transformers", "pandas") if sys.modules.get(name) is not None)
print(json.dumps({
    "logits": logits.tolist(),
    "labels": [p.label for p in predictions],
    "probabilities": [p.probabilities for p in predictions],
    "temperature": predictor.temperature,
    "backend": predictor.info()["backend"],
    "loaded": loaded,
}))
"""


def run_without_torch(folder, texts: list[str], mode: str = "truncate", precision: str = "fp32") -> dict:
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT, str(folder), mode, precision],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def imdb_sample(imdb_dir, size: int, seed: int = 0) -> list[str]:
    from training.data import stratified_subset

    frame = pd.read_parquet(imdb_dir / "test.parquet", columns=["text", "label"])
    return stratified_subset(frame, size, seed=seed)["text"].tolist()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, tiny_adapter):
    folder = tmp_path_factory.mktemp("tiny_export") / "exported"
    assert export.cli(["--model", str(tiny_adapter), "--output", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped_export") / "exported"
    export.main(export.ExportConfig(model=SHIPPED_MODEL_DIR, output=folder))
    return folder


# ----------------------------------------------------------------------------- tokenization mirrors training.text


@pytest.mark.parametrize(
    ("max_length", "strategy"), [(512, "head_tail"), (64, "head_tail"), (64, "head"), (48, "tail")]
)
def test_the_torch_free_tokenization_agrees_with_training_text(
    tiny_export, tiny_adapter, imdb_dir, max_length, strategy
):
    import dataclasses

    from transformers import AutoTokenizer

    from training import text

    tokenizer = AutoTokenizer.from_pretrained(tiny_adapter)
    record = dataclasses.replace(ExportRecord.load(tiny_export), max_length=max_length, truncation=strategy)
    fast = onnx_backend.load_tokenizer(tiny_export / onnx_backend.TOKENIZER_FILE)
    texts = imdb_sample(imdb_dir, 300, seed=1) + EDGE_CASES + ["x" * 30_000, "word " * 6_000]

    assert onnx_backend.encode_texts(fast, texts, record) == text.encode_texts(tokenizer, texts, max_length, strategy)
    assert onnx_backend.encode_windows(fast, texts[:40] + EDGE_CASES, record) == text.encode_windows(
        tokenizer, texts[:40] + EDGE_CASES, max_length
    )
    assert (record.prefix_ids, record.suffix_ids) == tuple(map(tuple, text.special_token_frame(tokenizer)))
    assert record.head_fraction == text.HEAD_FRACTION and record.chars_per_token_bound == text.CHARS_PER_TOKEN_BOUND


# ----------------------------------------------------------------------------- the export folder


def test_the_export_describes_itself_and_has_dynamic_batch_and_sequence_axes(tiny_export, tiny_adapter):
    import onnx

    from training.model import SentimentConfig

    assert is_export(tiny_export) and not is_export(tiny_adapter)
    assert sorted(path.name for path in tiny_export.iterdir()) == sorted(export.EXPORT_FILES)
    record = json.loads((tiny_export / onnx_backend.EXPORT_RECORD_FILE).read_text(encoding="utf-8"))
    adapter = SentimentConfig.load(tiny_adapter)
    assert record["base_model"] == adapter.base_model and tuple(record["labels"]) == adapter.labels
    assert (record["max_length"], record["truncation"]) == (adapter.max_length, adapter.truncation)
    for key in ("head_fraction", "temperature", "prefix_ids", "suffix_ids", "pad_id", "lora", "metrics", "int8"):
        assert key in record, key
    assert record["exported"]["parity_check"]["max_abs_logit_diff"] <= LOGIT_TOLERANCE
    assert record["exported"]["merged"] is True
    # The tiny adapter has no int8.json: its int8 graph keeps the head alone in fp32 and was never gated.
    assert record["int8"]["keep_fp32"] == ["pooler", "classifier"] and record["int8"]["passed"] is False

    for name in (onnx_backend.ONNX_FILE, onnx_backend.ONNX_INT8_FILE):
        model = onnx.load(str(tiny_export / name))
        assert max(opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")) >= 17
        shapes = {
            value.name: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
            for value in [*model.graph.input, *model.graph.output]
        }
        assert shapes == {
            "input_ids": ["batch", "sequence"],
            "attention_mask": ["batch", "sequence"],
            "logits": ["batch", len(adapter.labels)],
        }


def test_onnxruntimes_optimizer_fuses_every_layer_of_the_tiny_distilbert(tiny_export):
    """Eager attention, the TorchScript exporter and model_type "bert" fuse DistilBERT too: 2 layers here."""
    import onnx

    record = ExportRecord.load(tiny_export)
    fused = {"EmbedLayerNormalization": 1, "Attention": 2, "SkipLayerNormalization": 4, "BiasGelu": 2}
    assert record.onnx["fused_operators"] == fused
    graph = onnx.load(str(tiny_export / onnx_backend.ONNX_FILE)).graph
    operators = [node.op_type for node in graph.node]
    assert {name: operators.count(name) for name in fused} == fused
    # Every matrix int8 can quantize has a role: the two layers' four each, then the head.
    roles = export.graph_matrix_roles(onnx.load(str(tiny_export / onnx_backend.ONNX_FILE)))
    parts = ("attention.qkv", "attention.output", "ffn.in", "ffn.out")
    assert sorted(roles.values()) == sorted(
        [f"layer.{i}.{part}" for i in range(2) for part in parts] + ["pooler", "classifier"]
    )
    quantized = [node.op_type for node in onnx.load(str(tiny_export / onnx_backend.ONNX_INT8_FILE)).graph.node]
    assert quantized.count("QAttention") == 2 and "Attention" not in quantized
    assert quantized.count("MatMulInteger") + quantized.count("DynamicQuantizeMatMul") == 6  # 3 per layer


def test_the_export_refuses_other_files_an_earlier_export_without_overwrite_and_a_missing_adapter(
    tiny_export, tiny_adapter, tmp_path, capsys
):
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    assert export.cli(["--model", str(tiny_adapter), "--output", str(crowded)]) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert export.cli(["--model", str(tiny_adapter), "--output", str(tiny_export)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert export.cli(["--model", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 2
    assert "No adapter folder" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        export.parse_args(["--output", str(tmp_path / "out"), "--opset", "13"])
    assert "--opset must be at least 17" in capsys.readouterr().err


def test_the_export_is_published_in_one_rename_and_a_failed_one_leaves_nothing(tiny_adapter, tmp_path, monkeypatch):
    from training import storage

    published = []
    real_publish = storage.publish_folder

    def spy(staged, destination):
        published.append((sorted(path.name for path in staged.iterdir()), staged.parent == destination.parent))
        real_publish(staged, destination)

    monkeypatch.setattr(storage, "publish_folder", spy)
    target = tmp_path / "exported"
    export.main(export.ExportConfig(model=tiny_adapter, output=target))
    assert published == [(sorted(export.EXPORT_FILES), True)]  # complete when staged, beside the destination
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exported"]  # no staging or scratch left

    def wrong(*args, **kwargs):
        raise ExportError("the logits differ")

    monkeypatch.setattr(export, "check_parity", wrong)
    with pytest.raises(ExportError, match="differ"):
        export.main(export.ExportConfig(model=tiny_adapter, output=target, overwrite=True))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exported"] and is_export(target)  # the old one stays


def test_a_graph_with_external_data_is_refused_before_a_session_reads_it(tiny_export, tmp_path):
    import onnx

    folder = tmp_path / "external"
    shutil.copytree(tiny_export, folder)
    model = onnx.load(str(folder / onnx_backend.ONNX_FILE))
    onnx.save_model(model, str(folder / onnx_backend.ONNX_FILE), save_as_external_data=True, location="weights.bin")
    with pytest.raises(ExportError, match="external data"):
        Predictor.from_pretrained(folder)


# ----------------------------------------------------------------------------- served through the Predictor


def test_an_export_is_served_through_the_predictor_with_its_surface(tiny_export, tiny_adapter):
    served, reference = Predictor.from_pretrained(tiny_export), Predictor.from_pretrained(tiny_adapter, "cpu")
    assert served.labels == reference.labels and served.temperature == pytest.approx(reference.temperature)
    assert Predictor.from_pretrained(tiny_export, calibrated=False).temperature == 1.0
    assert "onnxruntime" in served.device_name and served.precision == "fp32"
    info = served.info()
    assert set(reference.info()) - {"torch"} <= set(info) and info["backend"] == "onnxruntime"
    assert "never measured" in info["precision_reason"]  # 'auto', and the tiny export's int8 has no gate
    one = served.predict_one("A wonderful film.")
    assert one.label in served.labels and sum(one.probabilities.values()) == pytest.approx(1.0)
    assert one.confidence == max(one.probabilities.values())
    texts = ["Great.", "Terrible, boring film.", "Fine. " * 300]
    # The tiny model's probabilities all sit near 0.5, so a tolerance on them lets a wrong export pass. Its
    # logits (from which the shared Predictor code takes the probabilities, with the temperature checked above)
    # must agree within TINY_LOGIT_TOLERANCE, and first they must tell the reviews apart, and each review's two
    # labels apart, by far more than that: then another review's logits or swapped labels fail.
    expected = reference.predict_logits(texts, batch_size=2)
    between_reviews = min(np.abs(expected[i] - expected[j]).max() for i, j in combinations(range(len(texts)), 2))
    between_labels = np.abs(expected[:, 1] - expected[:, 0]).min()
    assert min(between_reviews, between_labels) > 20 * TINY_LOGIT_TOLERANCE, expected
    np.testing.assert_allclose(served.predict_logits(texts, batch_size=2), expected, rtol=0, atol=TINY_LOGIT_TOLERANCE)
    assert served.with_long_reviews("sliding").predict_logits(texts).shape == (3, 2)
    # How close the int8 graph stays is checked on the shipped export (its margins span several logits), in
    # test_the_shipped_adapter_served_without_torch_matches_the_pytorch_predictor: the tiny one's hardly move.
    quantized = Predictor.from_pretrained(tiny_export, precision="int8")
    assert quantized.precision == "int8" and quantized.info()["int8"]["keep_fp32"] == ["pooler", "classifier"]
    assert quantized.predict_logits(texts).shape == (3, 2)

    with pytest.raises(EmptyTextError, match="Review 2 is empty"):
        served.predict(["fine", "  "])
    with pytest.raises(TextError, match="not UTF-8"):
        served.predict(["bad \udcff bytes"])
    with pytest.raises(ValueError, match="batch_size"):
        served.predict(["fine"], batch_size=0)
    with pytest.raises(ExportError, match="CPU"):
        Predictor.from_pretrained(tiny_export, device="cuda")
    with pytest.raises(ModelLoadError, match="fp32 or int8, not bf16"):
        Predictor.from_pretrained(tiny_export, precision="bf16")
    with pytest.raises(ModelLoadError, match="Explanations need PyTorch"):
        served.explain("Good.")


def test_an_export_of_an_older_format_is_refused_with_the_fix(tiny_export, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(tiny_export, folder)
    record = json.loads((folder / onnx_backend.EXPORT_RECORD_FILE).read_text(encoding="utf-8"))
    (folder / onnx_backend.EXPORT_RECORD_FILE).write_text(json.dumps({**record, "format": 1}), encoding="utf-8")
    with pytest.raises(ExportError, match="Export the adapter again"):
        Predictor.from_pretrained(folder)


@pytest.mark.slow
def test_the_shipped_adapter_served_without_torch_matches_the_pytorch_predictor(
    shipped_export, shipped_predictor, imdb_dir, record_property
):
    """64 stratified IMDb test reviews and the edge cases: logits within 1e-4, identical labels."""
    texts = imdb_sample(imdb_dir, 64) + EDGE_CASES
    served = run_without_torch(shipped_export, texts)
    assert served["loaded"] == [] and served["backend"] == "onnxruntime"  # neither torch, transformers nor pandas

    reference = shipped_predictor
    expected = reference.predict_logits(texts, batch_size=8)
    difference = np.abs(np.asarray(served["logits"]) - expected)
    record_property("max_abs_logit_diff", f"{difference.max():.2e}")  # the figure docs/export.md quotes
    record_property("reviews", len(texts))
    assert difference.max() <= LOGIT_TOLERANCE, f"max |logit difference| {difference.max():.2e}"
    assert served["labels"] == [prediction.label for prediction in reference.predict(texts, batch_size=8)]
    assert served["temperature"] == pytest.approx(reference.temperature)
    expected_probabilities = reference.predict_proba(texts, batch_size=8)
    served_probabilities = np.array([[row[label] for label in reference.labels] for row in served["probabilities"]])
    np.testing.assert_allclose(served_probabilities, expected_probabilities, atol=1e-5)
    # int8 needs no torch either, and follows the fp32 margins, logit(POSITIVE) - logit(NEGATIVE), to within a
    # tenth of their spread over these reviews (several logits): another review's logits or swapped labels fail.
    quantized = run_without_torch(shipped_export, texts, precision="int8")
    assert quantized["loaded"] == []
    margin = np.diff(expected, axis=1)[:, 0]
    spread = np.ptp(margin)
    assert spread > 4, margin
    error = np.abs(np.diff(np.asarray(quantized["logits"]), axis=1)[:, 0] - margin).max()
    assert error < 0.1 * spread, (error, spread)


@pytest.mark.slow
def test_sliding_windows_without_torch_match_the_pytorch_predictor(shipped_export, shipped_predictor, imdb_dir):
    reviews = imdb_sample(imdb_dir, 200, seed=2)
    texts = sorted(reviews, key=len)[-3:] + [EDGE_CASES[2], "Great."]  # the longest: several windows each
    served = run_without_torch(shipped_export, texts, mode="sliding")
    expected = shipped_predictor.with_long_reviews("sliding").predict_logits(texts, batch_size=8)
    assert np.abs(np.asarray(served["logits"]) - expected).max() <= LOGIT_TOLERANCE


def test_predict_cli_serves_an_export_like_the_adapter(tiny_export, tiny_adapter, tmp_path, capsys):
    from inference.predict import cli

    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text\nA wonderful film.\nDull and far too long.\n=1+1 a formula\n")
    outputs = {}
    for name, model in (("export", tiny_export), ("adapter", tiny_adapter)):
        outputs[name] = tmp_path / f"{name}.csv"
        assert cli(["--model", str(model), "--file", str(reviews), "--output", str(outputs[name])]) == 0
    from_export, from_adapter = (pd.read_csv(outputs[name]) for name in ("export", "adapter"))
    assert list(from_export.columns) == list(from_adapter.columns)
    assert from_export["predicted_label"].tolist() == from_adapter["predicted_label"].tolist()
    assert np.allclose(from_export["confidence"], from_adapter["confidence"], atol=1e-5)
    capsys.readouterr()
    assert cli(["--model", str(tiny_export), "--explain", "Good."]) == 2
    assert "--explain needs the adapter folder" in capsys.readouterr().err
