"""What every predictor does around its forward passes, with numpy as the only import.

The PyTorch `Predictor` and the torch-free `OnnxPredictor` differ in how they tokenize and run the model;
checking the texts, averaging sliding windows, temperature scaling and the `Prediction`s they return are
this one base class, so both serve the same figures.
"""

from __future__ import annotations

import numpy as np

from training.text import Prediction, check_texts


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits (the arithmetic of evaluation.metrics.softmax, which imports scipy)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


class Scoring:
    """predict_logits, predict_proba, predict and predict_one on top of a subclass's `_encode` (texts to token
    ids and the text each row came from) and `_forward` (token ids to logits), `labels` and `temperature`."""

    labels: tuple[str, ...]
    temperature: float

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        raise NotImplementedError

    def _forward(self, token_ids: list[list[int]], batch_size: int, progress: bool) -> np.ndarray:
        raise NotImplementedError

    def predict_logits(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Raw logits (before temperature), shape (len(texts), len(labels)). Raises EmptyTextError for a blank text."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
        texts = list(texts)
        check_texts(texts)
        token_ids, owner = self._encode(texts)
        window_logits = self._forward(token_ids, batch_size, progress)
        # Each review's logits: the mean over its windows (exactly its one row when truncating).
        logits = np.zeros((len(texts), window_logits.shape[1]))
        np.add.at(logits, owner, window_logits)
        return logits / np.bincount(owner, minlength=len(texts))[:, None]

    def predict_proba(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), calibrated by the temperature."""
        return softmax(self.predict_logits(texts, batch_size, progress) / self.temperature)

    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[Prediction]:
        probabilities = self.predict_proba(texts, batch_size=batch_size, progress=progress)
        return [self._prediction(row) for row in probabilities]

    def predict_one(self, text: str) -> Prediction:
        return self.predict([text])[0]

    def _prediction(self, row: np.ndarray) -> Prediction:
        best = int(row.argmax())
        return Prediction(
            label=self.labels[best],
            confidence=float(row[best]),
            probabilities={label: float(p) for label, p in zip(self.labels, row)},
        )
