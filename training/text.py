"""Reviews as text and token ids: checking, clipping, truncation, windows, padding and tokenization, with
numpy as the only import (the tokenizer is passed in).

Training, evaluation, the PyTorch `Predictor` and the torch-free `OnnxPredictor` (inference/onnx_predictor.py,
which must import neither torch nor pandas) all turn reviews into model inputs with these functions, so a
review is truncated the same way when the model learns from it and when a user asks about it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TRUNCATION_STRATEGIES = ("head", "tail", "head_tail")
# The names an adapter trained on 0/1 labels gets: label 0 is NEGATIVE, label 1 POSITIVE.
BINARY_LABELS = ("NEGATIVE", "POSITIVE")
# Sun et al. (2019), "How to Fine-Tune BERT for Text Classification": keeping the first 128 and
# the last 382 tokens of a long IMDb review beats keeping only the beginning or only the end.
HEAD_FRACTION = 128 / 510
# A token is rarely longer than 20 characters, so this many characters per token of budget from each
# end keep every token truncation can select, while a 1 MB review costs no more than a long one.
CHARS_PER_TOKEN_BOUND = 20
# Sliding-window scoring reads at most this many windows of a review (about 4,000 tokens at 512).
MAX_WINDOWS = 16
# On a GPU every new input shape costs a kernel plan (cuDNN attention) the first time it is seen, so
# batches are padded to a multiple of this many tokens: a handful of shapes instead of hundreds (docs/gpu.md).
GPU_LENGTH_MULTIPLE = 64
# On a CPU, oneDNN builds and keeps a kernel for every input shape it meets (its primitive cache), so a server
# scoring reviews of every length grows without end, in bf16 most (docs/faults.md); padding to a multiple of this
# many tokens bounds the shapes at the cost of a few padded tokens per batch.
CPU_LENGTH_MULTIPLE = 32


class TextError(ValueError):
    """A review the model cannot read; the message names the review and what to do."""


class EmptyTextError(TextError):
    """A review with no text: there is nothing to predict."""


# What a prediction less confident than the caller's threshold is shown as (Prediction.verdict).
UNCERTAIN = "UNCERTAIN"


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str  # the top label, whatever the number of labels
    confidence: float  # probability of `label`
    probabilities: dict[str, float]  # every label's probability, in the adapter's label order; they sum to 1

    def verdict(self, uncertain_below: float | None = None) -> str:
        return verdict(self.label, self.confidence, uncertain_below)


def verdict(label: str, confidence: float, uncertain_below: float | None = None) -> str:
    """The label, or UNCERTAIN when the confidence is below `uncertain_below` (None: always the label).
    With N labels the top label's probability is at least 1 / N, so a useful threshold lies above that."""
    if uncertain_below is not None and confidence < uncertain_below:
        return UNCERTAIN
    return label


def is_unicode_text(text: str) -> bool:
    """False for strings holding lone surrogates (undecodable bytes), which no tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_texts(texts: list[str]) -> None:
    """Raise EmptyTextError or TextError naming the first review that cannot be classified."""
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise EmptyTextError(f"Review {index + 1} is empty; give some text to classify.")
        if not is_unicode_text(text):
            raise TextError(
                f"Review {index + 1} holds bytes that are not UTF-8 text (lone surrogates, as Python makes of "
                f"undecodable input); re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8."
            )


def truncate_token_ids(
    token_ids: list[int], budget: int, strategy: str, head_fraction: float = HEAD_FRACTION
) -> list[int]:
    """Keep at most `budget` tokens: the first ones, the last ones, or the first quarter and last three quarters."""
    if strategy not in TRUNCATION_STRATEGIES:
        raise ValueError(f"Unknown truncation strategy '{strategy}'; choose from {', '.join(TRUNCATION_STRATEGIES)}.")
    if len(token_ids) <= budget:
        return list(token_ids)
    if strategy == "head":
        return list(token_ids[:budget])
    if strategy == "tail":
        return list(token_ids[len(token_ids) - budget :])
    head = round(budget * head_fraction)
    tail = budget - head
    return list(token_ids[:head]) + list(token_ids[len(token_ids) - tail :])


def clip_characters(text: str, max_length: int, chars_per_token_bound: int = CHARS_PER_TOKEN_BOUND) -> str:
    """Drop the middle of a text far longer than any truncation could keep, before tokenizing it."""
    keep = max_length * chars_per_token_bound
    if len(text) <= 2 * keep:
        return text
    return text[:keep] + " " + text[-keep:]


def window_token_ids(token_ids: list[int], budget: int, stride: int) -> list[list[int]]:
    """Overlapping windows of at most `budget` tokens, `stride` apart, that together cover every token."""
    if not 0 < stride <= budget:
        raise ValueError(f"stride must be between 1 and the window size {budget}, not {stride}.")
    starts = list(range(0, max(len(token_ids) - budget, 0) + 1, stride))
    if starts[-1] + budget < len(token_ids):  # the last stride fell short of the end: one more window, flush right
        starts.append(len(token_ids) - budget)
    return [list(token_ids[start : start + budget]) for start in starts]


def window_plan(budget: int, max_windows: int = MAX_WINDOWS) -> tuple[int, int]:
    """(stride, longest): windows half a budget apart, and the most tokens `max_windows` of them cover."""
    stride = max(budget // 2, 1)
    return stride, budget + stride * (max_windows - 1)


def pad_token_ids(
    token_ids: list[list[int]], pad_id: int, multiple: int | None = None, cap: int | None = None
) -> dict[str, np.ndarray]:
    """Right-padded `input_ids` and `attention_mask`, (len(token_ids), longest), the length rounded up to
    `multiple` but never past `cap`. The same arrays as the tokenizer's `pad`, without its per-item Python work."""
    longest = max(len(ids) for ids in token_ids)
    if multiple:
        longest = -(-longest // multiple) * multiple
        longest = min(longest, cap) if cap else longest
    input_ids = np.full((len(token_ids), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), longest), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ----------------------------------------------------------------------------- tokenization


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a single text ([CLS] and [SEP] for BERT)."""
    inner = tokenizer("x", add_special_tokens=False)["input_ids"]
    framed = tokenizer("x")["input_ids"]
    start = next(i for i in range(len(framed)) if framed[i : i + len(inner)] == inner)
    return framed[:start], framed[start + len(inner) :]


def encode_texts(tokenizer, texts: list[str], max_length: int, strategy: str) -> list[list[int]]:
    """Token ids with special tokens for each text, truncated to `max_length` by `strategy`."""
    prefix, suffix = special_token_frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    clipped = [clip_characters(text, max_length) for text in texts]
    # verbose=False: texts longer than the model are expected here; truncation happens below.
    encoded = tokenizer(clipped, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [prefix + truncate_token_ids(ids, budget, strategy) + suffix for ids in encoded]


def encode_windows(
    tokenizer, texts: list[str], max_length: int, max_windows: int = MAX_WINDOWS
) -> tuple[list[list[int]], list[int]]:
    """Every text as overlapping windows of `max_length` tokens (special tokens included), half a window apart.

    Returns (windows, owner): owner[k] is the index of the text window k came from. A text needing
    more than `max_windows` windows keeps the beginning and end of it, like head+tail truncation.
    """
    prefix, suffix = special_token_frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    stride, longest = window_plan(budget, max_windows)
    clipped = [clip_characters(text, longest) for text in texts]
    encoded = tokenizer(clipped, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    windows, owner = [], []
    for index, ids in enumerate(encoded):
        for window in window_token_ids(truncate_token_ids(ids, longest, "head_tail"), budget, stride):
            windows.append(prefix + window + suffix)
            owner.append(index)
    return windows, owner
