"""The Predictor and the predict CLI: results, files, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from inference.predict import cli
from inference.predictor import Predictor
from inference.torch_backend import TorchBackend
from tests.conftest import SHIPPED_MODEL_DIR
from training.errors import DataError, ModelLoadError
from training.paths import PROJECT_ROOT
from training.readers import read_table
from training.text import CPU_LENGTH_MULTIPLE, EmptyTextError, clip_characters, truncate_token_ids


@pytest.fixture(scope="module")
def predictor(tiny_predictor) -> Predictor:
    return tiny_predictor


def test_predictions_are_distributions_in_input_order(predictor):
    texts = ["A superb, moving film.", "Dreadful.", "It was fine I guess, a bit long " * 100]
    probabilities = predictor.predict_proba(texts, batch_size=2)
    assert probabilities.shape == (3, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0) and (probabilities >= 0).all()
    # Batching and length-sorting must not change any row.
    one_by_one = np.vstack([predictor.predict_proba([text]) for text in texts])
    assert np.allclose(probabilities, one_by_one, atol=1e-5)
    prediction = predictor.predict_one(texts[0])
    assert prediction.label in ("NEGATIVE", "POSITIVE")
    assert prediction.confidence == max(prediction.probabilities.values())
    assert predictor.device_name == "CPU"


def test_cpu_batches_pad_to_a_few_lengths_so_the_kernel_cache_stays_bounded(predictor, monkeypatch):
    """oneDNN keeps a kernel for every input shape, so a server scoring reviews of every length would grow
    without end (docs/faults.md): on a CPU a batch pads to a multiple of CPU_LENGTH_MULTIPLE, never past
    max_length, and the padding changes no probability."""
    widths = []
    forward = predictor.backend.logits
    monkeypatch.setattr(
        predictor.backend, "logits", lambda batch: widths.append(batch["input_ids"].shape[1]) or forward(batch)
    )
    texts = [" ".join(["good"] * words) for words in (1, 7, 30, 31, 40, 90, 5000)]
    padded = predictor.predict_proba(texts, batch_size=1)
    assert widths == [predictor.config.max_length, 96, 64, 64, 32, 32, 32]  # longest first; 90 words and 2 specials
    assert all(width % CPU_LENGTH_MULTIPLE == 0 for width in widths)
    monkeypatch.setattr(type(predictor.backend), "length_multiple", None)
    assert np.allclose(padded, predictor.predict_proba(texts, batch_size=1), atol=1e-6)


def test_int8_batches_stay_unpadded_as_its_gate_measured_them(tiny_adapter):
    """Dynamic int8 quantizes a batch with one scale, padding included: padding would move its labels."""
    assert Predictor.from_pretrained(tiny_adapter, precision="int8").backend.length_multiple is None


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_refused_clearly(predictor, text):
    with pytest.raises(EmptyTextError, match="empty"):
        predictor.predict_one(text)


class TokenizerSpy:
    """Stands in for a Predictor's tokenizer: records the length of every text it is given to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.lengths = tokenizer, []

    def __call__(self, texts, *args, **kwargs):
        self.lengths += [len(texts)] if isinstance(texts, str) else [len(text) for text in texts]
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("long_reviews", ["truncate", "sliding"])
def test_a_one_megabyte_review_is_clipped_before_the_tokenizer_sees_it(predictor, long_reviews, monkeypatch):
    from training.text import CHARS_PER_TOKEN_BOUND, MAX_WINDOWS

    text = "This film is a triumph of patience. " * 30_000  # ~1 MB
    spied = TorchBackend(
        predictor.model, TokenizerSpy(predictor.tokenizer), predictor.config, predictor.device, predictor.model_dir
    )
    reader = Predictor(spied, long_reviews=long_reviews)
    prediction = reader.predict_one(text)
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6
    # What keeps a huge review as cheap as a long one: the tokenizer gets both ends of it, at most
    # CHARS_PER_TOKEN_BOUND characters per token the model can read (sliding: per token of all its windows),
    # never the megabyte. Asserted instead of a time, which depends on the machine and its load.
    tokens = predictor.config.max_length
    if long_reviews == "sliding":
        tokens = (tokens - 2) + (tokens - 2) // 2 * (MAX_WINDOWS - 1)  # the tokens MAX_WINDOWS windows can read
    budget = 2 * tokens * CHARS_PER_TOKEN_BOUND + 1
    assert max(reader.tokenizer.lengths) == budget < len(text) / 10


def test_truncation_keeps_head_and_tail():
    ids = list(range(1000))
    assert truncate_token_ids(ids, 8, "head") == list(range(8))
    assert truncate_token_ids(ids, 8, "tail") == list(range(992, 1000))
    assert truncate_token_ids(ids, 8, "head_tail") == [0, 1, 994, 995, 996, 997, 998, 999]
    assert truncate_token_ids(ids[:5], 8, "head_tail") == ids[:5]
    assert truncate_token_ids(list(range(600)), 510, "head_tail")[:128] == list(range(128))
    assert clip_characters("a" * 100, 4) == "a" * 100
    clipped = clip_characters("h" * 1000 + "t" * 1000, 4)
    assert clipped.startswith("h" * 80) and clipped.endswith("t" * 80) and len(clipped) == 161


def test_cli_prints_a_line_per_review(tiny_adapter, capsys):
    assert cli(["--model", str(tiny_adapter), "--device", "cpu", "Loved it.", "Hated it."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split()[0] in ("POSITIVE", "NEGATIVE") for line in lines)


def test_cli_scores_a_file_and_flags_empty_rows(tiny_adapter, tmp_path, capsys):
    source = tmp_path / "reviews.csv"
    pd.DataFrame({"id": [1, 2, 3], "text": ["Great fun.", "", "Boring, slow, bad."], "label": [1, 0, 0]}).to_csv(
        source, index=False
    )
    output = tmp_path / "predictions.jsonl"
    assert cli(["--model", str(tiny_adapter), "--file", str(source), "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["id"] for row in rows] == [1, 2, 3] and [row["label"] for row in rows] == [1, 0, 0]
    assert rows[1]["error"] == "empty text" and rows[1]["predicted_label"] == ""
    assert rows[0]["predicted_label"] in ("POSITIVE", "NEGATIVE") and rows[2]["error"] == ""
    assert abs(rows[0]["p_negative"] + rows[0]["p_positive"] - 1) < 1e-5
    assert "1 empty rows flagged" in capsys.readouterr().err


def test_cli_reads_stdin(tiny_adapter):
    result = subprocess.run(
        [sys.executable, "inference/predict.py", "--model", str(tiny_adapter), "--json"],
        input="Loved it.\n\nHated it.\n",
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["Loved it.", "Hated it."]


def test_bad_files_get_one_clear_message(bad_files, tiny_adapter, capsys):
    for path, message in bad_files.items():
        with pytest.raises(DataError, match=message):
            read_table(path)
        assert cli(["--model", str(tiny_adapter), "--file", str(path)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and "Traceback" not in error


def test_blank_lines_are_rows_flagged_later_not_an_error(tmp_path):
    path = tmp_path / "header_only.txt"
    path.write_bytes(b"\n\n")
    assert read_table(path)["text"].tolist() == ["", ""]


def test_cli_refuses_empty_text_and_unknown_output_type(tiny_adapter, tmp_path, capsys):
    assert cli(["--model", str(tiny_adapter), "   "]) == 2
    assert "No review given" in capsys.readouterr().err
    assert cli(["--model", str(tiny_adapter), "--file", "x.csv", "--output", str(tmp_path / "out.xlsx")]) == 2
    assert "--output must end in .csv or .jsonl" in capsys.readouterr().err


def test_missing_and_corrupt_adapters_are_reported(tiny_adapter, tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="No adapter folder"):
        Predictor.from_pretrained(tmp_path / "nothing here")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_adapter, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="corrupt"):
        Predictor.from_pretrained(corrupt)

    # Pickle (.bin) adapters: test_reliability.py::test_pickle_adapter_is_refused_unless_trusted.

    assert cli(["--model", str(corrupt), "Fine film."]) == 2
    assert "corrupt" in capsys.readouterr().err


# ----------------------------------------------------------------------------- serving options


def test_windows_cover_every_token_with_overlap():
    from training.text import window_token_ids

    ids = list(range(1000))
    windows = window_token_ids(ids, budget=300, stride=150)
    assert all(len(window) == 300 for window in windows)
    assert windows[0][0] == 0 and windows[-1][-1] == 999
    assert sorted(set().union(*windows)) == ids
    assert window_token_ids(list(range(10)), budget=300, stride=150) == [list(range(10))]


def test_sliding_windows_match_truncation_on_short_reviews_and_read_all_of_long_ones(tiny_adapter):
    exact = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32")
    sliding = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32", long_reviews="sliding")
    short = ["A superb, moving film.", "Dreadful."]
    assert np.allclose(exact.predict_proba(short), sliding.predict_proba(short), atol=1e-6)
    probabilities = sliding.predict_proba(["filler " * 1200, "Fine."])
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_sliding_windows_read_a_verdict_that_sits_only_in_the_middle(shipped_predictor):
    # About 1,600 tokens: 640 of narration on each side of a verdict (about 220 tokens). Head+tail truncation
    # keeps 128 + 382 tokens of narration and never sees the middle; windows read all of it.
    truncating = shipped_predictor
    sliding = truncating.with_long_reviews("sliding")
    filler = "The film was shown at the cinema on Tuesday evening and it ran for two hours. " * 40
    middles = {
        "NEGATIVE": "A dreadful, boring mess: awful acting, a stupid script, I hated every minute. " * 12,
        "POSITIVE": "A wonderful, moving masterpiece: superb acting, a brilliant script, I loved every minute. " * 12,
    }
    reviews = {verdict: filler + middle + filler for verdict, middle in middles.items()}
    unread = truncating.predict_logits([filler + filler])
    for verdict, review in reviews.items():
        assert truncating.predict_one(middles[verdict]).label == verdict  # the middle alone: a clear verdict
        # Truncation: exactly the logits of the narration alone, whatever the middle says ...
        assert np.array_equal(truncating.predict_logits([review]), unread)
        # ... windows: the middle's verdict.
        assert sliding.predict_one(review).label == verdict, verdict


def test_the_cpu_default_is_bf16_with_amx_and_fp32_without_and_int8_is_selectable(tiny_adapter, monkeypatch):
    import torch

    from inference import predictor as predictor_module
    from inference.predictor import resolve_precision

    cpu = torch.device("cpu")
    for amx, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(predictor_module, "bf16_is_fast", lambda answer=amx: answer)
        assert resolve_precision("auto", cpu) == expected
        assert resolve_precision("fp32", cpu) == "fp32"  # exact fp32 stays one flag away on every CPU
    with pytest.raises(ModelLoadError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    fast = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="int8")
    half = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="bf16")
    exact = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32")
    assert (fast.precision, half.precision, exact.precision) == ("int8", "bf16", "fp32")
    assert next(half.model.parameters()).dtype == torch.bfloat16

    def quantized(model):
        return any(".quantized." in type(module).__module__ for module in model.modules())

    assert quantized(fast.model) and not quantized(exact.model)
    # How close each approximation stays is measured on the shipped adapter: the tiny one's outputs hardly move
    # from review to review (margins within 1e-4 of each other, probabilities all 0.5), so a tolerance on them
    # lets anything pass, a constant 0.5 too. The shipped margins, logit(POSITIVE) - logit(NEGATIVE), span several
    # logits: int8 and bf16 must follow them to within a tenth of that spread.
    texts = [
        "A superb, moving film.",
        "Dreadful, dull and far too long.",
        "The plot was thin but the actors were wonderful.",
        "I walked out after twenty minutes.",
        "A masterpiece. See it twice.",
        "Badly written and badly shot.",
    ]
    shipped = {
        precision: Predictor.from_pretrained(SHIPPED_MODEL_DIR, device="cpu", precision=precision)
        for precision in ("fp32", "int8", "bf16")
    }
    margin = np.diff(shipped["fp32"].predict_logits(texts), axis=1)[:, 0]
    spread = np.ptp(margin)
    assert spread > 4, margin
    for precision in ("int8", "bf16"):
        error = np.abs(np.diff(shipped[precision].predict_logits(texts), axis=1)[:, 0] - margin).max()
        assert error < 0.1 * spread, (precision, error, spread)


def test_the_environment_switch_keeps_every_cpu_on_fp32(monkeypatch):
    from training.device import CPU_BF16_SWITCH, bf16_is_fast

    monkeypatch.setenv(CPU_BF16_SWITCH, "0")
    assert bf16_is_fast() is False


def test_temperature_saved_with_the_adapter_scales_the_logits(tiny_adapter, tmp_path):
    from training.model import write_calibration

    folder = tmp_path / "calibrated"
    shutil.copytree(tiny_adapter, folder)
    write_calibration(folder, {"temperature": 2.0})
    texts = ["A superb, moving film.", "Dreadful."]
    calibrated = Predictor.from_pretrained(folder, device="cpu", precision="fp32")
    raw = Predictor.from_pretrained(folder, device="cpu", precision="fp32", calibrated=False)
    assert calibrated.temperature == 2.0 and raw.temperature == 1.0
    logits = raw.predict_logits(texts)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    assert np.allclose(calibrated.predict_proba(texts), expected)
    (folder / "calibration.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="calibration.json is corrupt"):
        Predictor.from_pretrained(folder, device="cpu")


def test_an_interrupted_publish_points_to_the_intact_previous_adapter(tiny_adapter, tmp_path):
    # The state a kill between publish_adapter's two renames leaves: only the retired folder exists.
    shutil.copytree(tiny_adapter, tmp_path / ".adapter.old-1234")
    with pytest.raises(ModelLoadError, match=r"previous adapter is intact at .*\.adapter\.old-1234"):
        Predictor.from_pretrained(tmp_path / "adapter")
