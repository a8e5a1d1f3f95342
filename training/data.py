"""Labelled reviews for training and evaluation: label names and ids, the IMDb splits, stratified subsets and
the training/validation split.

Files are read through training/readers.py (bounded, untrusted) and tokenized through training/text.py, so
a review is read and truncated the same way when the model learns from it and when a user asks about it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from training.errors import DataError
from training.readers import TABLE_SUFFIXES, TEXT_SUFFIXES, read_table
from training.text import BINARY_LABELS

HUB_DATASET = "stanfordnlp/imdb"
# The most labels a classifier trained here may have: more is almost always a wrong --label-column
# (an id or a free-text column), and each label needs reviews of its own to learn from.
MAX_LABELS = 100
INTEGER_PATTERN = re.compile(r"[+-]?\d+")


def read_labelled(path: str | Path, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    """Read a labelled file and check it (validate_labelled): columns `text` and `label` come back."""
    frame = read_table(path, text_column=None)
    return validate_labelled(frame, origin=str(path), text_column=text_column, label_column=label_column)


def normalise_label(value) -> int | str | None:
    """A label cell as a whole number (1, 1.0, "1") or a stripped string ("positive"); None when empty."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else str(value)
    text = str(value).strip()
    if not text:
        return None
    return int(text) if INTEGER_PATTERN.fullmatch(text) else text


def validate_labelled(
    frame: pd.DataFrame, origin: str, text_column: str = "text", label_column: str = "label"
) -> pd.DataFrame:
    """Return `frame`'s text and label columns as `text` and `label`, or raise one DataError naming every problem.

    Labels are whole numbers or names (normalise_label); which names a model uses is decided by
    label_names. A column of whole numbers only comes back as integers, as the IMDb files hold them.
    """
    problems = [
        f"no '{column}' column ({flag})"
        for column, flag in ((text_column, "--text-column"), (label_column, "--label-column"))
        if column not in frame.columns
    ]
    labels = None
    if not problems:
        if len(frame) == 0:
            problems.append("no rows")
        labels = [normalise_label(value) for value in frame[label_column]]
        empty = [index for index, label in enumerate(labels) if label is None]
        if empty:
            rows = ", ".join(str(index + 1) for index in empty[:5]) + (", ..." if len(empty) > 5 else "")
            problems.append(f"{len(empty)} empty label cell{'s' * (len(empty) > 1)} (row {rows}): label every review")
        if len(frame) and (frame[text_column].fillna("").astype(str).str.strip() == "").all():
            problems.append("every text is empty")
    if problems:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(
            f"{origin}: " + "; ".join(problems) + f". Columns found: {columns}; expected a text column "
            f"('{text_column}') and a label column ('{label_column}') of label names or numbers."
        )
    result = pd.DataFrame({"text": frame[text_column].fillna("").astype(str).to_numpy()})
    result["label"] = pd.Series(labels, dtype=int if all(isinstance(label, int) for label in labels) else object)
    return result


def is_integer_name(name: str) -> bool:
    return bool(INTEGER_PATTERN.fullmatch(str(name)))


def label_names(values, given: tuple[str, ...] | list[str] | None = None, origin: str = "the data") -> tuple[str, ...]:
    """The label names a model trained on `values` (normalised labels) uses, in output order.

    `given` (from --labels) fixes names and order. Otherwise they come from the data: 0/1 alone are
    NEGATIVE/POSITIVE, so an adapter trained on IMDb keeps those; other whole numbers are their own names
    in numeric order ("1" ... "10"); names are sorted. Refuses more than MAX_LABELS labels.
    """
    if given:
        names = tuple(str(name).strip() for name in given)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or not all(names):
            raise DataError(f"--labels must name each label once, without blanks; got {', '.join(names)}.")
    else:
        distinct = set(values)
        if distinct and all(isinstance(value, int) for value in distinct):
            names = BINARY_LABELS if distinct <= {0, 1} else tuple(str(value) for value in sorted(distinct))
        else:
            names = tuple(sorted({str(value) for value in distinct}))
    if len(names) > MAX_LABELS:
        shown = ", ".join(names[:5])
        raise DataError(
            f"{origin} has {len(names)} different labels ({shown}, ...); at most {MAX_LABELS} are supported. "
            f"Is --label-column the column holding the labels?"
        )
    folded = [name.casefold() for name in names]
    clashing = sorted({name for name in names if folded.count(name.casefold()) > 1})
    if clashing:
        raise DataError(f"{origin}: labels {', '.join(clashing)} differ only in case; merge or rename them.")
    return names


def label_ids(values, labels: tuple[str, ...], origin: str, known_as: str = "the adapter's labels") -> np.ndarray:
    """Each normalised label as its index in `labels`, or one DataError naming every unknown label.

    A label matches a name (`"positive"`, or 3 for the name "3"); a whole number also matches by position
    (0 is the first name) when the names are not numbers themselves, so IMDb's 0/1 are NEGATIVE/POSITIVE.
    """
    by_name = {name: index for index, name in enumerate(labels)}
    by_position = not all(is_integer_name(name) for name in labels)
    mapping, unknown = {}, []
    for value in dict.fromkeys(values):  # distinct, in order of first appearance
        if str(value) in by_name:
            mapping[value] = by_name[str(value)]
        elif by_position and isinstance(value, int) and 0 <= value < len(labels):
            mapping[value] = value
        else:
            unknown.append(str(value))
    if unknown:
        shown = ", ".join(f"'{name}'" for name in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise DataError(
            f"{origin}: label{'s' * (len(unknown) > 1)} {shown} not among {known_as} "
            f"({', '.join(labels)}). Relabel the data or use an adapter trained on these labels."
        )
    return np.array([mapping[value] for value in values], dtype=int)


def check_training_labels(ids: np.ndarray, labels: tuple[str, ...], origin: str) -> dict[str, int]:
    """Reviews per label, or one DataError: a classifier needs two labels or more, each with two reviews or more
    (a stratified split puts one of each in the validation split). Returns {label: count}."""
    counts = {label: int(count) for label, count in zip(labels, np.bincount(ids, minlength=len(labels)))}
    if len(labels) < 2:
        raise DataError(
            f"{origin} holds one label only ('{labels[0]}'); a classifier needs reviews of at least two labels."
        )
    scarce = [f"'{label}' ({count})" for label, count in counts.items() if count < 2]
    if scarce:
        raise DataError(
            f"{origin}: each label needs at least two reviews (one may go to the validation split); too few for "
            f"{', '.join(scarce[:10])}. Add reviews, drop the label, or leave it out of --labels."
        )
    return counts


def load_split(source: str | Path, split: str, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    """Load one split of labelled reviews from a folder, a file, or the Hugging Face Hub.

    - a folder holding `{split}.parquet` (or .csv/.jsonl/.json), such as the local IMDb copy;
    - a single labelled file (the split name is then ignored);
    - `hub`, or any dataset id on the Hub (`stanfordnlp/imdb` by default).

    Returns columns `text` and `label` (normalised labels, validate_labelled), whatever the columns were called.
    """
    source = str(source)
    path = Path(source).expanduser()
    columns = {"text_column": text_column, "label_column": label_column}
    if path.is_dir():
        for suffix in TABLE_SUFFIXES:
            candidate = path / f"{split}{suffix}"
            if candidate.exists():
                return read_labelled(candidate, **columns)
        raise DataError(f"{path} has no {split}.parquet (or .csv/.jsonl/.json).")
    if path.is_file():
        return read_labelled(path, **columns)
    if source.startswith((".", "/", "~")) or path.suffix.lower() in TABLE_SUFFIXES + TEXT_SUFFIXES:
        raise DataError(f"{source}: no such file or folder.")
    return _load_from_hub(HUB_DATASET if source == "hub" else source, split, **columns)


def _load_from_hub(dataset_id: str, split: str, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    from training.base import check_hub_reachable  # the hub check lives with the other hub access

    check_hub_reachable(
        f"dataset '{dataset_id}'",
        fix="Point --data at a local copy instead, for example --data ../shared/data/imdb "
        "(a folder with train.parquet and test.parquet, columns text and label).",
    )
    import datasets  # imported here: only hub users pay its start-up cost

    frame = datasets.load_dataset(dataset_id, split=split).to_pandas()
    return validate_labelled(frame, f"{dataset_id}[{split}]", text_column, label_column)


# ----------------------------------------------------------------------------- splitting


def stratified_subset(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """At most `size` rows with the label balance of `frame`, always the same ones for a seed."""
    if size is None or size >= len(frame):
        return frame.reset_index(drop=True)
    if size <= 0:
        raise DataError(f"A subset needs at least one row, not {size}.")
    kinds = frame["label"].nunique()
    if size < kinds:  # a stratified sample holds at least one review of each label
        raise DataError(
            f"A stratified subset of {size} reviews cannot hold all {kinds} labels; ask for at least {kinds}."
        )
    from sklearn.model_selection import train_test_split

    subset, _ = train_test_split(frame, train_size=size, stratify=frame["label"], random_state=seed)
    return subset.reset_index(drop=True)


def split_train_validation(
    frame: pd.DataFrame, validation_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a stratified, seeded validation split out of the training data."""
    if not 0 < validation_fraction < 1:
        raise DataError(f"--validation-fraction must be between 0 and 1, not {validation_fraction}.")
    if frame["label"].nunique() < 2 or frame["label"].value_counts().min() < 2:
        raise DataError("The training data needs at least two reviews of each label to carve a validation split.")
    kinds, held_out = frame["label"].nunique(), math.ceil(len(frame) * validation_fraction)
    if held_out < kinds or len(frame) - held_out < kinds:
        raise DataError(
            f"A validation split of {held_out} of {len(frame)} reviews cannot hold all {kinds} labels on both sides; "
            f"use more data or change --validation-fraction."
        )
    from sklearn.model_selection import train_test_split

    train, validation = train_test_split(
        frame, test_size=validation_fraction, stratify=frame["label"], random_state=seed
    )
    return train.reset_index(drop=True), validation.reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """A training run's data: the two splits (label ids in `label`), the label names and reviews per label."""

    train: pd.DataFrame
    validation: pd.DataFrame
    labels: tuple[str, ...]
    counts: dict[str, int]  # reviews per label in the training data, before the split


def load_training_data(
    source: str | Path,
    validation_fraction: float,
    seed: int,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    labels: tuple[str, ...] | list[str] | None = None,
) -> TrainingData:
    """The training split as label ids of `labels` (None: label_names of the data), checked
    (check_training_labels), then a stratified, seeded validation split carved from it.

    Training carves its model-selection split with this, and evaluation/calibrate.py rebuilds the same
    split from the settings and labels recorded with an adapter.
    """
    frame = load_split(source, "train", text_column, label_column)
    origin = f"{source} (train)"
    names = label_names(frame["label"], labels, origin)
    frame["label"] = label_ids(frame["label"], names, origin, known_as="--labels" if labels else "the labels")
    counts = check_training_labels(frame["label"].to_numpy(), names, origin)
    train_frame, validation_frame = split_train_validation(frame, validation_fraction, seed)
    train_frame = stratified_subset(train_frame, train_limit, seed)
    validation_frame = stratified_subset(validation_frame, validation_limit, seed)
    return TrainingData(train_frame, validation_frame, names, counts)
