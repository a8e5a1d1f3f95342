"""The model deployment: one Predictor per Ray Serve replica, and requests from many clients batched together.

The predictor is loaded, and answers a warm-up review, in `__init__`: Serve routes no request to a replica
before its constructor returns, so a replica that is restarting (or a second one scaling up) never takes a
request it cannot answer. Batching, the replica's request limits and its queue are Ray Serve's (@serve.batch,
max_ongoing_requests, max_queued_requests), set from ServeSettings by serving/api.py's `application`.
"""

from __future__ import annotations

import asyncio
import collections

from ray import serve
from ray.serve.metrics import Counter

from serving.predictors import backend_of, describe, load_predictor
from serving.settings import ServeSettings
from training.text import Prediction

WARM_UP_REVIEW = "A warm-up review, so the replica takes requests only once the model answers."


def count_texts(requests: list[list[str]]) -> int:
    """A batch's size in reviews, not requests, so one batch is one bounded forward pass whatever its requests."""
    return sum(len(texts) for texts in requests)


def split_like(flat: list, requests: list[list[str]]) -> list[list]:
    """`flat` cut back into one list per request, in order: the inverse of concatenating `requests`."""
    out, start = [], 0
    for texts in requests:
        out.append(flat[start : start + len(texts)])
        start += len(texts)
    return out


@serve.deployment(name="SentimentModel")
class SentimentModel:
    """Predicts, explains and describes; the ingress (serving/api.py) checks every request before it gets here."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.backend = backend_of(settings.model_dir)
        threads = max(1, round(settings.cpus_per_replica))  # the replica's share of its machine's cores
        self.predictor = load_predictor(settings.model_dir, settings.device, settings.precision, threads)
        self.predictor.predict([WARM_UP_REVIEW])
        self.predictions = Counter(
            "sentiment_predictions", description="Reviews classified, by predicted label.", tag_keys=("label",)
        )
        # @serve.batch takes its limits at decoration; these setters are its documented way to configure them.
        self._batched.set_max_batch_size(settings.max_batch_size)
        self._batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def predict(self, texts: list[str]) -> list[Prediction]:
        """Predictions for one request's reviews, in order, computed in a batch with other requests' reviews."""
        if self.settings.batching:
            return await self._batched(texts)
        return await self._alone(texts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, batch_size_fn=count_texts)
    async def _batched(self, requests: list[list[str]]) -> list[list[Prediction]]:
        flat = [text for texts in requests for text in texts]
        return split_like(await self._forward(flat), requests)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _alone(self, requests: list[list[str]]) -> list[list[Prediction]]:
        """Unbatched (batching: false), for comparison: one request per forward pass, one pass at a time."""
        return [await self._forward(requests[0])]

    async def _forward(self, texts: list[str]) -> list[Prediction]:
        # In a worker thread, so this replica's event loop keeps taking requests into the next batch meanwhile.
        predictions = await asyncio.to_thread(self.predictor.predict, texts, self.settings.forward_batch_size)
        for label, count in collections.Counter(prediction.label for prediction in predictions).items():
            self.predictions.inc(count, tags={"label": label})
        return predictions

    async def explain(self, text: str) -> dict:
        """Word attributions (inference/explain.py) as JSON-ready values; PyTorch adapters only (the ingress
        refuses explanations for an export before calling this)."""
        explanation = await asyncio.to_thread(self.predictor.explain, text)
        return explanation.to_dict()

    def info(self) -> dict:
        return describe(self.predictor, self.backend)

    def ready(self) -> bool:
        """Answers once the constructor has loaded the model and it has predicted the warm-up review."""
        return True
