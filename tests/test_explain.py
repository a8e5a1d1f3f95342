"""Word attributions: they point at the right words on the shipped adapter, add up as Integrated
Gradients promises, match Captum's LayerIntegratedGradients, and map back to the exact characters."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.explain import (
    Explanation,
    WordAttribution,
    attribution_model,
    encode_with_words,
    explain,
    integrated_gradients,
    padded_baseline,
)
from inference.predict import cli
from inference.predictor import Predictor
from tests.conftest import SHIPPED_MODEL_DIR
from training.paths import PROJECT_ROOT
from training.text import EmptyTextError, clip_characters, encode_texts

SENTENCE = "The acting was wonderful but the plot was terrible and boring."
# Completeness tolerance: |sum(scores) - (F(input) - F(baseline))| at most 1% of F(input) - F(baseline).
# At the default 50 Gauss-Legendre steps the shipped adapter measured 0.003% on this sentence and at
# most 0.03% on 11 IMDb training reviews of 113 to 408 tokens (32 steps: up to 0.6%); 5 steps miss by 67%.
RELATIVE_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def shipped(shipped_predictor) -> Predictor:
    # fp32: the exact path, and no second model (int8 or bf16 would explain with an fp32 copy).
    assert shipped_predictor.precision == "fp32"
    return shipped_predictor


@pytest.fixture(scope="module")
def shipped_explanation(shipped) -> Explanation:
    return shipped.explain(SENTENCE)


@pytest.fixture(scope="module")
def tiny(tiny_predictor) -> Predictor:
    return tiny_predictor


def completeness_error(explanation: Explanation) -> float:
    return abs(sum(word.score for word in explanation.words) - explanation.prediction_minus_baseline)


# ----------------------------------------------------------------------------- the shipped adapter


def test_shipped_adapter_blames_terrible_and_credits_wonderful(shipped, shipped_explanation):
    explanation = shipped_explanation
    assert explanation.label == shipped.predict_one(SENTENCE).label == "NEGATIVE"
    assert explanation.target == "logit(POSITIVE) - logit(NEGATIVE)"
    top_positive = [word.word for word in explanation.top(3, "positive")]
    top_negative = [word.word for word in explanation.top(3, "negative")]
    assert top_positive[0] == "wonderful", top_positive
    assert top_negative[0] == "terrible", top_negative
    assert "boring" in [word.word for word in explanation.top(5, "negative")]
    # Every word the model read is there, once, in order, and nothing else (the special tokens score 0).
    assert [word.word for word in explanation.words] == [
        "The",
        "acting",
        "was",
        "wonderful",
        "but",
        "the",
        "plot",
        "was",
        "terrible",
        "and",
        "boring",
        ".",
    ]
    assert not explanation.truncated


def test_attributions_add_up_to_the_change_from_the_baseline(shipped, shipped_explanation):
    explanation = shipped_explanation
    error = completeness_error(explanation)
    assert error <= RELATIVE_TOLERANCE * abs(explanation.prediction_minus_baseline), (
        error,
        explanation.prediction_minus_baseline,
    )
    # Captum's delta is the same quantity: grouping pieces into words loses nothing.
    assert explanation.convergence_delta == pytest.approx(
        sum(word.score for word in explanation.words) - explanation.prediction_minus_baseline, abs=1e-4
    )
    # The check has teeth: too few integration steps miss the total by far more than the tolerance.
    coarse = shipped.explain(SENTENCE, n_steps=5)
    assert completeness_error(coarse) > 10 * RELATIVE_TOLERANCE * abs(coarse.prediction_minus_baseline)


def test_int8_precision_explains_with_an_fp32_copy_and_reports_its_own_prediction(tiny_adapter, tiny):
    quantized = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="int8")
    assert quantized.precision == "int8"
    text = "A moving, beautifully acted film."
    explanation = quantized.explain(text)
    prediction = quantized.predict_one(text)
    assert (explanation.label, explanation.confidence) == (prediction.label, prediction.confidence)
    # Gradients come from the fp32 model: the same attributions as an fp32 predictor's, not zeros.
    exact = tiny.explain(text)
    assert [word.score for word in explanation.words] == pytest.approx([word.score for word in exact.words], abs=1e-5)
    assert any(abs(word.score) > 1e-6 for word in explanation.words)
    assert attribution_model(quantized) is attribution_model(quantized)  # loaded once, then cached
    assert attribution_model(tiny) is tiny.model


# ----------------------------------------------------------------------------- the method


def test_matches_captum_layer_integrated_gradients_on_the_embedding_layer(tiny):
    import torch
    from captum.attr import LayerIntegratedGradients

    review = encode_with_words(
        tiny.tokenizer, "Not bad at all, quite good really.", tiny.config.max_length, tiny.config.truncation
    )
    baseline = padded_baseline(review.token_ids, review.content, tiny.tokenizer.pad_token_id)
    ours, _, our_delta = integrated_gradients(tiny.model, review.token_ids, baseline, n_steps=20, internal_batch_size=7)

    def logit_difference(input_ids):
        logits = tiny.model(input_ids=input_ids).logits
        return logits[:, 1] - logits[:, 0]

    layer = LayerIntegratedGradients(logit_difference, tiny.model.get_input_embeddings())
    theirs, their_delta = layer.attribute(
        torch.tensor([review.token_ids]), torch.tensor([baseline]), n_steps=20, return_convergence_delta=True
    )
    assert ours == pytest.approx(theirs[0].sum(-1).tolist(), abs=1e-5)
    assert our_delta == pytest.approx(their_delta.item(), abs=1e-5)
    assert ours[0] == ours[-1] == 0.0  # [CLS] and [SEP] are the same in input and baseline


def test_baseline_pads_the_review_and_keeps_the_special_tokens():
    assert padded_baseline([101, 7, 8, 9, 102], range(1, 4), 0) == [101, 0, 0, 0, 102]
    with pytest.raises(ValueError, match="padding token"):
        padded_baseline([101, 7, 102], range(1, 2), None)


def test_tiny_distilbert_adapter_explains_and_adds_up(tiny):
    explanation = tiny.explain("Dreadful plot, but a lovely score by the orchestra.")
    assert explanation.label in ("NEGATIVE", "POSITIVE")
    assert [word.word for word in explanation.words][:3] == ["Dreadful", "plot", ","]
    assert completeness_error(explanation) <= max(RELATIVE_TOLERANCE * abs(explanation.prediction_minus_baseline), 1e-4)


@pytest.mark.parametrize("text", ["", "  \n\t"])
def test_empty_text_is_refused_like_predict(tiny, text):
    with pytest.raises(EmptyTextError, match="empty"):
        tiny.explain(text)


def test_explaining_does_not_disturb_predictions_in_other_threads(tiny):
    texts = ["Great fun from start to finish.", "Boring and far too long."] * 4
    expected = tiny.predict_proba(texts)
    failures = []

    def predict_repeatedly():
        for _ in range(20):
            if not (abs(tiny.predict_proba(texts) - expected) < 1e-5).all():
                failures.append("a prediction changed while a review was being explained")

    worker = threading.Thread(target=predict_repeatedly)
    worker.start()
    for _ in range(3):
        explain(tiny, "An uneven film with a few fine moments.", n_steps=16)
    worker.join()
    assert not failures


def test_top_words_are_signed_and_sorted():
    words = [
        WordAttribution("a", 0, 1, 0.5),
        WordAttribution("b", 2, 3, -2.0),
        WordAttribution("c", 4, 5, 1.5),
        WordAttribution("d", 6, 7, 0.0),
    ]
    explanation = Explanation("a b c d", "POSITIVE", 0.9, words, "logit(POSITIVE) - logit(NEGATIVE)", 0.0, 0.0)
    assert [word.word for word in explanation.top(5, "positive")] == ["c", "a"]
    assert [word.word for word in explanation.top(1, "negative")] == ["b"]
    with pytest.raises(ValueError, match="direction"):
        explanation.top(3, "up")


# ----------------------------------------------------------------------------- offsets


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SHIPPED_MODEL_DIR)


def assert_words_map_to_text(tokenizer, text: str, max_length: int, strategy: str = "head_tail"):
    review = encode_with_words(tokenizer, text, max_length, strategy)
    assert review.token_ids == encode_texts(tokenizer, [text], max_length, strategy)[0]
    previous_end = 0
    positions = []
    for start, end, pieces in review.words:
        assert previous_end <= start < end <= len(text)
        assert text[start:end].strip() == text[start:end]  # a word never starts or ends on a space
        previous_end = end
        positions += pieces
    assert positions == list(review.content)  # every token the model read belongs to exactly one word
    return review


@pytest.mark.parametrize(
    "text",
    [
        "Don't miss it: café scenes, naïve señor, well-made & 10/10!!! (really).",
        "Loved it 👍🏽👨‍👩‍👧 — c'est magnifique… ★★★★☆",
        "Tabs\tand\nnew lines,  double  spaces and a trailing space ",
        "日本語のレビュー and Ελληνικά and Русский text.",
        "\u200bzero\u200bwidth and combining e\u0301 accents",
    ],
    ids=["punctuation-accents", "emoji", "whitespace", "scripts", "zero-width"],
)
def test_offsets_point_at_the_words(tokenizer, text):
    review = assert_words_map_to_text(tokenizer, text, max_length=512)
    assert not review.truncated


def test_offsets_of_a_long_review_cover_its_head_and_tail(tokenizer):
    text = "First words matter. " + "The middle drags on and on. " * 300 + "Final verdict: superb!"
    review = assert_words_map_to_text(tokenizer, text, max_length=128)
    assert review.truncated and len(review.token_ids) == 128
    words = [text[start:end] for start, end, _ in review.words]
    assert words[:3] == ["First", "words", "matter"] and words[-4:] == ["verdict", ":", "superb", "!"]


def test_offsets_of_a_huge_review_survive_character_clipping(tokenizer):
    text = "Opening scene is tense. " + "Filler sentence here. " * 5_000 + "Ending is perfect."
    assert clip_characters(text, 128) != text  # the middle is cut before tokenizing
    review = assert_words_map_to_text(tokenizer, text, max_length=128)
    words = [text[start:end] for start, end, _ in review.words]
    assert words[:2] == ["Opening", "scene"] and words[-3:] == ["is", "perfect", "."]


def test_a_word_keeps_the_accents_and_modifiers_its_pieces_cover(tokenizer):
    text = "Cafe\u0301 was 👍🏽 great"  # a combining accent; an emoji with a skin tone
    review = assert_words_map_to_text(tokenizer, text, max_length=512)
    assert [text[start:end] for start, end, _ in review.words] == ["Cafe\u0301", "was", "👍🏽", "great"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=300).filter(str.strip), max_length=st.sampled_from([8, 32, 512]))
def test_offsets_property(tokenizer, text, max_length):
    assert_words_map_to_text(tokenizer, text, max_length)


# ----------------------------------------------------------------------------- command line


def test_cli_explain_prints_the_top_words(tiny_adapter, capsys):
    assert cli(["--model", str(tiny_adapter), "--explain", "A lovely, warm film.", "Awful."]) == 0
    out = capsys.readouterr().out
    assert out.count("towards POSITIVE:") == 2 and out.count("towards NEGATIVE:") == 2
    assert "A lovely, warm film." in out


def test_cli_explain_json_has_every_word_with_offsets(tiny_adapter, capsys):
    assert cli(["--model", str(tiny_adapter), "--explain", "--json", "A lovely, warm film."]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    result = json.loads(line)
    assert result["label"] in ("NEGATIVE", "POSITIVE") and 0.5 <= result["confidence"] <= 1
    assert [word["word"] for word in result["words"]] == ["A", "lovely", ",", "warm", "film", "."]
    assert all(result["text"][w["start"] : w["end"]] == w["word"] for w in result["words"])
    assert {"top_positive", "top_negative", "prediction_minus_baseline", "convergence_delta"} <= result.keys()


def test_cli_explain_refuses_empty_text_and_output(tiny_adapter, tmp_path, capsys):
    assert cli(["--model", str(tiny_adapter), "--explain", "  "]) == 2
    assert cli(["--model", str(tiny_adapter), "--explain", "--output", str(tmp_path / "x.csv"), "Fine."]) == 2
    err = capsys.readouterr().err
    assert "error: No review given" in err and "error: --explain prints its results" in err


def test_cli_explain_as_a_script_names_the_empty_review(tiny_adapter):
    # As a script, predict.py is __main__: the empty-text error must still be the one its CLI catches.
    result = subprocess.run(
        [sys.executable, "inference/predict.py", "--model", str(tiny_adapter), "--explain", "Good fun.", " "],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: Review 2 is empty; give some text to classify."


def test_a_smaller_pass_gives_the_same_attributions(tiny_predictor):
    # The app explains with fewer tokens a pass (less memory in the shared process): the same integral.
    text = "A wonderful, moving film. The plot was thin but the acting superb."
    default, small = tiny_predictor.explain(text), tiny_predictor.explain(text, tokens_per_pass=64)
    assert [word.word for word in small.words] == [word.word for word in default.words]
    assert all(abs(a.score - b.score) <= 1e-5 for a, b in zip(small.words, default.words))
