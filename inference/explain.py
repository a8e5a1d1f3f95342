"""Why a prediction came out as it did: how much each word of a review pushed it towards each label.

    from inference.predictor import Predictor
    explanation = Predictor.from_pretrained().explain("The acting was wonderful but the plot was terrible.")
    explanation.top(3, "negative")      # [WordAttribution(word='terrible', start=..., end=..., score=-4.2), ...]

    python inference/predict.py --explain "The acting was wonderful but the plot was terrible."

Method: Integrated Gradients (Sundararajan et al., 2017) of one scalar with respect to the output of the
input word-embedding layer, summed over the embedding dimensions of each word piece and then over the
pieces of each word. The scalar (`Explanation.target`):

- two labels: logit(POSITIVE) - logit(NEGATIVE) (the second label's logit minus the first's), whatever
  the prediction: a positive score pushed towards POSITIVE, a negative one towards NEGATIVE;
- more labels: the predicted label's logit minus the mean of the other labels' logits. A positive score
  pushed towards the predicted label, a negative one away from it, towards the others. We chose this
  over the predicted label's logit alone because a logit means nothing by itself (adding a constant to
  every logit changes no probability), and over its log-probability because that is not linear in the
  logits, so completeness would no longer split the logit margin that decides the label. With two labels
  it is half the binary target, so the binary case keeps its own (and its sign follows POSITIVE).

A word's score is in logit units, and all scores together add up to the target at the input minus at
the baseline (completeness), up to `convergence_delta`, the error of the numerical integral that Captum
reports.

This is exactly Captum's LayerIntegratedGradients on the word-embedding layer (a test checks that they
agree), computed as IntegratedGradients on `inputs_embeds` instead: no hook is put on the layer, so a
model shared with other threads (the app shares one Predictor across sessions) keeps predicting
correctly while a review is being explained.

The review is encoded exactly as the Predictor encodes it (training.data.encode_texts: the adapter's
max_length and truncation), so the explanation is about what the model read: a review longer than
max_length is explained on its kept head and tail only, and `Explanation.truncated` says so.
`Predictor(long_reviews="sliding")` still reports its own (all-windows) label and confidence, while the
words are attributed on that truncated view.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
import threading
import unicodedata
import weakref

import torch

from training.text import clip_characters, encode_texts, special_token_frame, truncate_token_ids

DIRECTIONS = ("positive", "negative")
# Integration points (Captum's Gauss-Legendre rule): the fewest that keep the completeness error
# negligible on IMDb reviews; time grows with the steps. Measurements: docs/inference.md.
DEFAULT_STEPS = 50
# Tokens per forward/backward pass over interpolated copies of the review, when internal_batch_size
# is not given: 16 copies of a 512-token review. Bigger passes run faster on the CPU but hold every
# copy's attention maps for the backward pass; this balances the two (measurements: docs/inference.md).
TOKENS_PER_PASS = 8192
# A word: letters and digits with inner apostrophes or hyphens (don't, well-made), or any other single
# non-space character (punctuation, an emoji). See group_into_words for how pieces join words.
WORD_PATTERN = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")


@dataclasses.dataclass(frozen=True)
class WordAttribution:
    word: str  # the word as it appears in the text
    start: int  # character offsets of the word in Explanation.text (text[start:end] == word)
    end: int
    score: float  # > 0 pushed towards Explanation.towards, < 0 towards Explanation.away (sum over its word pieces)


@dataclasses.dataclass(frozen=True)
class Explanation:
    text: str  # the text explained
    label: str  # the predicted label (the Predictor's own prediction)
    confidence: float
    words: list[WordAttribution]  # in text order; only the words the model read (long reviews are truncated head+tail)
    target: str  # what was attributed, e.g. "logit(POSITIVE) - logit(NEGATIVE)"
    prediction_minus_baseline: float  # F(input) - F(baseline) for that target
    convergence_delta: float  # sum(scores) - (F(input) - F(baseline)), from Captum
    truncated: bool = False  # True when the review was longer than max_length: `words` cover its kept head and tail
    towards: str = "POSITIVE"  # the label a positive score pushes towards: POSITIVE, or the predicted label (N > 2)
    away: str = "NEGATIVE"  # where a negative score pushes: NEGATIVE, or "the other labels" (N > 2)

    def top(self, k: int = 5, direction: str = "positive") -> list[WordAttribution]:
        """The k words that pushed hardest towards `towards` ("positive") or `away` ("negative"), strongest first."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not '{direction}'.")
        sign = 1.0 if direction == "positive" else -1.0
        pushing = [word for word in self.words if sign * word.score > 0]
        return sorted(pushing, key=lambda word: -sign * word.score)[:k]

    def to_dict(self, k: int = 5) -> dict:
        """Everything as plain JSON-ready values, with the top k words each way."""
        return {
            **dataclasses.asdict(self),
            "top_positive": [dataclasses.asdict(word) for word in self.top(k, "positive")],
            "top_negative": [dataclasses.asdict(word) for word in self.top(k, "negative")],
        }


# ----------------------------------------------------------------------------- attribution


def explain(
    predictor,
    text: str,
    n_steps: int = DEFAULT_STEPS,
    internal_batch_size: int | None = None,
    tokens_per_pass: int = TOKENS_PER_PASS,
) -> Explanation:
    """Integrated Gradients word attributions for the predictor's prediction on `text`.

    `n_steps`: integration points (more: a smaller convergence_delta, proportionally slower).
    `internal_batch_size`: interpolated copies per forward/backward pass (None: about `tokens_per_pass`
    tokens a pass; fewer tokens a pass hold less memory and take a little longer). Raises the Predictor's EmptyTextError for a blank text, like `predict`.
    """
    if n_steps < 1 or (internal_batch_size is not None and internal_batch_size < 1):
        raise ValueError(
            f"n_steps and internal_batch_size must be at least 1, not {n_steps} and {internal_batch_size}."
        )
    # The Predictor's own prediction (calibrated, at its precision). It also refuses an empty text with
    # the Predictor's own error class, before any other work.
    prediction = predictor.predict_one(text)
    labels = predictor.labels
    if len(labels) == 2:
        explained, target = None, f"logit({labels[1]}) - logit({labels[0]})"
        towards, away = labels[1], labels[0]
    else:
        explained = labels.index(prediction.label)
        target = f"logit({prediction.label}) - mean logit of the other {len(labels) - 1} labels"
        towards, away = prediction.label, "the other labels"
    review = encode_with_words(predictor.tokenizer, text, predictor.config.max_length, predictor.config.truncation)
    baseline_ids = padded_baseline(review.token_ids, review.content, predictor.tokenizer.pad_token_id)
    internal_batch_size = internal_batch_size or max(tokens_per_pass // len(review.token_ids), 1)
    piece_scores, prediction_minus_baseline, delta = integrated_gradients(
        attribution_model(predictor), review.token_ids, baseline_ids, n_steps, internal_batch_size, explained
    )
    words = [
        WordAttribution(word=text[start:end], start=start, end=end, score=float(sum(piece_scores[i] for i in pieces)))
        for start, end, pieces in review.words
    ]
    return Explanation(
        text=text,
        label=prediction.label,
        confidence=prediction.confidence,
        words=words,
        target=target,
        prediction_minus_baseline=prediction_minus_baseline,
        convergence_delta=delta,
        truncated=review.truncated,
        towards=towards,
        away=away,
    )


def explain_texts(predictor, texts: list[str], n_steps: int = DEFAULT_STEPS) -> list[Explanation]:
    """Explain several texts; a blank one is refused before any of them is explained."""
    if not all(isinstance(text, str) and text.strip() for text in texts):
        # The Predictor's own check names the first empty review and raises before doing any work, with
        # the error class its callers catch (inference/predict.py may be running as __main__).
        predictor.predict_logits(texts)
    return [explain(predictor, text, n_steps) for text in texts]


_FP32_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # predictor -> its fp32 twin
_FP32_LOCK = threading.Lock()


def attribution_model(predictor):
    """The model to take gradients through: the predictor's own when it runs in fp32, else an fp32 copy.

    int8 dynamic-quantized Linear layers have no backward to their input (its gradient comes back
    None: every attribution would be zero), and bf16 is too coarse for attributions that must add up.
    So the same merged adapter is loaded once more in fp32, on the predictor's device, the first time
    it is needed, and kept for as long as the predictor lives. The lock makes concurrent first
    explanations (app sessions share one Predictor) load it once.
    """
    if predictor.precision == "fp32":
        return predictor.model
    with _FP32_LOCK:
        model = _FP32_MODELS.get(predictor)
        if model is None:
            model = predictor.backend.load_fp32()
            _FP32_MODELS[predictor] = model
    return model


def padded_baseline(token_ids: list[int], content: range, pad_token_id: int | None) -> list[int]:
    """The baseline input: the same sequence with every review token replaced by [PAD].

    The special tokens that frame the review ([CLS] and [SEP] for BERT) stay. The model was trained
    never to draw content from [PAD], so it stands for "no words here"; keeping the length, positions
    and special tokens means the path from baseline to input changes the words and nothing else, so
    the whole difference F(input) - F(baseline) is credited to words (special tokens get exactly zero).
    An all-zero embedding, the other common choice, is a vector the model never saw.
    """
    if pad_token_id is None:
        raise ValueError("The tokenizer has no padding token to build the baseline from.")
    return [pad_token_id if position in content else token for position, token in enumerate(token_ids)]


def integrated_gradients(
    model,
    token_ids: list[int],
    baseline_ids: list[int],
    n_steps: int,
    internal_batch_size: int,
    explained: int | None = None,
) -> tuple[list[float], float, float]:
    """Per-token attributions of the target, F(input) - F(baseline), and Captum's delta. The target:
    logit(label 1) - logit(label 0) when `explained` is None, else logit(explained) - mean of the other logits."""
    from captum.attr import IntegratedGradients  # imported here: only explaining pays its start-up cost

    device = next(model.parameters()).device
    embedding_layer = model.get_input_embeddings()

    def logit_difference(embeddings: torch.Tensor) -> torch.Tensor:  # (batch, tokens, hidden) -> (batch,)
        # One unpadded sequence: the default attention mask (every token visible) is the Predictor's.
        logits = model(inputs_embeds=embeddings).logits.float()  # (batch, labels)
        if explained is None:
            return logits[:, 1] - logits[:, 0]
        others = torch.cat([logits[:, :explained], logits[:, explained + 1 :]], dim=1)
        return logits[:, explained] - others.mean(dim=1)

    # inference_mode(False): a caller (a Streamlit session, a test) may have turned gradients off.
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            embedded = embedding_layer(torch.tensor([token_ids, baseline_ids], device=device))
            inputs, baseline = embedded[:1].detach(), embedded[1:].detach()  # each (1, tokens, hidden)
            at_input, at_baseline = logit_difference(embedded).tolist()
        attributions, delta = IntegratedGradients(logit_difference).attribute(
            inputs,
            baselines=baseline,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
    piece_scores = attributions[0].double().sum(dim=-1).tolist()  # (tokens,): summed over the embedding
    return piece_scores, at_input - at_baseline, float(delta.item())


# ----------------------------------------------------------------------------- word pieces to words


@dataclasses.dataclass(frozen=True)
class EncodedReview:
    token_ids: list[int]  # exactly what the Predictor feeds the model, special tokens included
    content: range  # positions of the review's own tokens (not the special tokens around them)
    words: list[tuple[int, int, list[int]]]  # (start, end, token positions) per word read, in text order
    truncated: bool  # the review had more tokens than max_length allows


def encode_with_words(tokenizer, text: str, max_length: int, strategy: str) -> EncodedReview:
    """Encode `text` as the Predictor does and say which characters of `text` each kept token came from.

    encode_texts clips the middle of a huge text to a few characters per token of budget, tokenizes,
    then keeps the head and tail tokens. The same steps are replayed here with character offsets, and
    the token ids are checked against encode_texts' so the offsets describe what the model read.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Explanations need a fast (Rust) tokenizer for character offsets.")
    token_ids = encode_texts(tokenizer, [text], max_length, strategy)[0]
    prefix, suffix = special_token_frame(tokenizer)
    clipped = clip_characters(text, max_length)
    encoding = tokenizer(
        clipped, add_special_tokens=False, truncation=False, verbose=False, return_offsets_mapping=True
    )
    every_id, every_offset = encoding["input_ids"], encoding["offset_mapping"]
    kept = truncate_token_ids(list(range(len(every_id))), max_length - len(prefix) - len(suffix), strategy)
    if prefix + [every_id[i] for i in kept] + suffix != token_ids:
        raise RuntimeError("Token offsets do not line up with encode_texts; the explanation would be wrong.")
    to_text = clipped_to_original(text, clipped)
    words = group_into_words(clipped, [every_offset[i] for i in kept])
    words = [(to_text(start), to_text(end), [len(prefix) + k for k in pieces]) for start, end, pieces in words]
    return EncodedReview(
        token_ids=token_ids,
        content=range(len(prefix), len(token_ids) - len(suffix)),
        words=words,
        truncated=len(kept) < len(every_id) or clipped != text,
    )


def group_into_words(text: str, piece_spans: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """Group word pieces, given as character spans in `text` in order, into words: (start, end, piece indices).

    A piece belongs to the WORD_PATTERN word its first non-space character falls in (or the last word
    before it). A word runs from its first kept piece to its last: a word cut by truncation shows only
    what the model read, and a character the pattern splits off but the tokenizer kept inside a piece
    (an emoji's skin tone) or dropped (a combining accent) stays with its word. A word never reaches
    into the next one and never ends on a space.
    """
    word_spans = [match.span() for match in WORD_PATTERN.finditer(text)]
    if not word_spans:
        return []
    word_starts = [start for start, _ in word_spans]
    pieces_of_word: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(piece_spans):
        segment = text[start:end]
        first_character = start + len(segment) - len(segment.lstrip())
        word = max(bisect.bisect_right(word_starts, first_character) - 1, 0)
        pieces_of_word.setdefault(word, []).append(index)
    words = sorted(pieces_of_word.items())
    grouped = []
    for position, (word, pieces) in enumerate(words):
        word_start, word_end = word_spans[word]
        next_start = word_spans[words[position + 1][0]][0] if position + 1 < len(words) else len(text)
        start = max(word_start, min(piece_spans[i][0] for i in pieces))
        end = min(max(piece_spans[i][1] for i in pieces), next_start)
        while end > start and text[end - 1].isspace():
            end -= 1
        while end < next_start and unicodedata.category(text[end]).startswith("M"):  # an accent the tokenizer dropped
            end += 1
        if end <= start:  # pieces with empty spans: show the whole word
            start, end = word_start, word_end
        grouped.append((start, end, pieces))
    return grouped


def clipped_to_original(text: str, clipped: str):
    """Map a character position in clip_characters(text) back to `text`.

    A clipped text is text[:keep] + " " + text[-keep:]; no word spans the inserted space, so word
    boundaries map one to one.
    """
    if clipped == text:
        return lambda position: position
    keep = (len(clipped) - 1) // 2
    if clipped[:keep] != text[:keep] or clipped[keep + 1 :] != text[len(text) - keep :]:
        raise RuntimeError("clip_characters changed shape; update clipped_to_original to match.")
    shift = len(text) - len(clipped)
    return lambda position: position if position <= keep else position + shift


# ----------------------------------------------------------------------------- command line


def print_explanations(predictor, texts: list[str], as_json: bool = False, k: int = 5) -> list[dict]:
    """For `predict.py --explain`: per text the label, confidence and the top k words each way.

    With `as_json`, one JSON object per line with every word and its offsets. Returns those objects.
    """
    results = []
    for explanation in explain_texts(predictor, texts):
        result = explanation.to_dict(k)
        results.append(result)
        if as_json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
            continue
        text = explanation.text
        shown = text if len(text) <= 70 else text[:67] + "..."
        print(f"{explanation.label:<8} {explanation.confidence:.3f}  {shown}")
        for direction, label in (("positive", explanation.towards), ("negative", explanation.away)):
            top = ", ".join(f"{word.word} {word.score:+.2f}" for word in explanation.top(k, direction)) or "(none)"
            print(f"  towards {label}: {top}")
        note = "; a long review: only its kept head and tail were read" if explanation.truncated else ""
        print(
            f"  scores: shares of {explanation.target}, summing to {explanation.prediction_minus_baseline:+.2f} "
            f"(its change from an all-[PAD] review){note}",
            flush=True,
        )
    return results
