"""The sentiment API: a FastAPI app behind a Ray Serve ingress, in front of the model deployment (serving/model.py).

    sentiment-serve                                   # the shipped adapter on http://127.0.0.1:8000
    serve run serving/config.yaml                     # the same, with Ray Serve's own command
    curl -s localhost:8000/v1/predict -H 'Content-Type: application/json' -d '{"texts": ["A wonderful film."]}'

Routes: POST /v1/predict, POST /v1/explain, GET /v1/model, GET /healthz, GET /readyz, and FastAPI's /docs and
/openapi.json. The ingress checks every request (token, size, schema, texts) before the model sees it, and turns
the model deployment's refusals into JSON: Ray Serve's BackPressureError (its max_queued_requests is full) and a
replica that went away become 503 with Retry-After. Guide: docs/serving.md.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from serving.http import ApiError, RequestGuard, api_token, install_error_handlers
from serving.model import SentimentModel
from serving.predictors import ONNXRUNTIME, prediction_record
from serving.settings import ServeSettings, settings_from_args
from training.text import TextError, check_texts

APP_NAME = "sentiment"
READY_TIMEOUT_S = 2.0  # how long /readyz (and a request before the model is up) waits for the model to answer


class ErrorBody(BaseModel):
    error: str = Field(description="A short code: overloaded, invalid_texts, body_too_large, unauthorized, ...")
    message: str = Field(description="What went wrong and what to do.")
    details: list[dict] | None = Field(None, description="422: one {field, problem} per problem.")


ERROR_RESPONSES = {
    status: {"description": description, "model": ErrorBody}
    for status, description in {
        401: "Missing or wrong bearer token (only when the server sets SENTIMENT_API_TOKEN)",
        413: "Body over the size limit",
        422: "Invalid request: schema, count or text",
        503: "Queue full, model loading or a replica restarting: retry after the Retry-After seconds",
    }.items()
}


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(
        description="The reviews to classify, 1 to the service's max_texts (GET /v1/model); answers keep this order.",
        examples=[["A wonderful film, moving and beautifully acted.", "Two hours I will never get back."]],
    )
    uncertain_below: float | None = Field(
        None, ge=0, le=1, description="Flag predictions less confident than this (default: the service's setting)."
    )


class PredictionOut(BaseModel):
    label: str = Field(description="The most probable label.")
    confidence: float = Field(description="Its (calibrated) probability.")
    probabilities: dict[str, float] = Field(description="Every label's probability, in the model's label order.")
    uncertain: bool = Field(description="Whether confidence is below uncertain_below.")
    verdict: str = Field(description="The label, or UNCERTAIN when uncertain.")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    uncertain_below: float


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="One review.", examples=["The acting was wonderful but the plot was terrible."])


def text_problem(texts: list[str], settings: ServeSettings) -> str | None:
    """Why these reviews cannot be classified as sent (None: they can): their number, a length, an empty or
    undecodable text. Checked here, in the ingress, so one bad review never fails a batch shared with others."""
    if not 1 <= len(texts) <= settings.max_texts:
        return (
            f"Send 1 to {settings.max_texts} reviews in `texts`, not {len(texts)}: split larger sets across "
            "requests, or score files with sentiment-bulk."
        )
    for index, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            return (
                f"Review {index + 1} is {len(text):,} characters; this service takes at most "
                f"{settings.max_text_chars:,}. The model reads about its first and last 10,000 anyway: cut the middle."
            )
    try:
        check_texts(texts)
    except TextError as error:
        return str(error)
    return None


@serve.deployment(name="SentimentAPI", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class SentimentAPI:
    """The HTTP ingress; it holds no model, only a handle to the model deployment."""

    def __init__(self, model, settings: ServeSettings):
        self.model, self.settings = model, settings
        self.answered = False  # the model has answered once: no need to ask whether it is up before each request
        self.model_info: dict | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Built in the replica, after __init__, so the app's limits and token come from this replica's settings
        and environment (Ray Serve's late-bound ingress)."""
        return build_api(self)

    async def call(self, method: str, *args):
        """A call to the model deployment, its refusals turned into ApiErrors (503 with Retry-After)."""
        retry = {"Retry-After": self.settings.retry_after_header}
        try:
            return await getattr(self.model, method).remote(*args)
        except BackPressureError as error:
            message = f"The service is at capacity ({error.message}); retry after {retry['Retry-After']} s."
            raise ApiError(503, "overloaded", message, retry) from None
        except (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError) as error:
            message = f"A model replica stopped while handling this request ({type(error).__name__}); retry."
            raise ApiError(503, "replica_unavailable", message, retry) from None

    async def model_answers(self) -> bool:
        """Whether a model replica answers within READY_TIMEOUT_S (a replica busy with others counts as up)."""
        response = self.model.ready.remote()
        try:
            await asyncio.wait_for(response, READY_TIMEOUT_S)
        except TimeoutError:
            response.cancel()
            return False
        except BackPressureError:
            return self.answered
        except (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError):
            return False
        self.answered = True
        return True

    async def require_model(self) -> None:
        if not self.answered and not await self.model_answers():
            message = f"The model is still loading; retry after {self.settings.retry_after_header} s (GET /readyz)."
            raise ApiError(503, "model_loading", message, {"Retry-After": self.settings.retry_after_header})

    async def describe(self) -> dict:
        if self.model_info is None:
            await self.require_model()
            info = await self.call("info")
            limits = ("max_texts", "max_text_chars", "max_body_bytes", "uncertain_below", "batching", "max_batch_size")
            self.model_info = {**info, "serving": {name: getattr(self.settings, name) for name in limits}}
        return self.model_info


def build_api(service: SentimentAPI) -> FastAPI:
    """The FastAPI app for one ingress replica: routes, the request guard and the JSON error handlers."""
    settings = service.settings
    api = FastAPI(
        title="Movie-review sentiment API",
        version="1",
        description="LoRA sentiment classifier for movie reviews on Ray Serve. Guide: docs/serving.md.",
    )
    api.add_middleware(RequestGuard, token=api_token(), max_body_bytes=settings.max_body_bytes)
    install_error_handlers(api)

    @api.post("/v1/predict", responses=ERROR_RESPONSES)
    async def predict(request: PredictRequest) -> PredictResponse:
        """Classify 1 to max_texts reviews; answers keep their order."""
        problem = text_problem(request.texts, settings)
        if problem:
            raise ApiError(422, "invalid_texts", problem)
        await service.require_model()
        threshold = settings.uncertain_below if request.uncertain_below is None else request.uncertain_below
        predictions = await service.call("predict", request.texts)
        return PredictResponse(
            predictions=[prediction_record(prediction, threshold) for prediction in predictions],
            uncertain_below=threshold,
        )

    @api.post(
        "/v1/explain",
        responses={**ERROR_RESPONSES, 409: {"description": "The model is an ONNX export", "model": ErrorBody}},
    )
    async def explain(request: ExplainRequest) -> dict:
        """The words that pushed one review towards each label (Integrated Gradients; seconds on a CPU)."""
        problem = text_problem([request.text], settings)
        if problem:
            raise ApiError(422, "invalid_texts", problem)
        if (await service.describe())["backend"] == ONNXRUNTIME:
            raise ApiError(
                409,
                "explain_unsupported",
                "Explanations take gradients through the PyTorch adapter; this service runs an ONNX export. "
                "Serve the adapter folder (sentiment-serve --model trained_model) to explain.",
            )
        return await service.call("explain", request.text)

    @api.get("/v1/model", responses=ERROR_RESPONSES)
    async def model() -> dict:
        """What is served: base model, adapter, labels, precision, backend, device, its metrics and the limits."""
        return await service.describe()

    @api.get("/healthz")
    async def healthz() -> dict:
        """The API process is up (it may still be loading the model: see /readyz)."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"description": "The model does not answer yet", "model": ErrorBody}})
    async def readyz() -> dict:
        """Ready once a model replica answers."""
        if not await service.model_answers():
            raise ApiError(
                503,
                "not_ready",
                "No model replica answers yet (loading, or restarting); retry shortly.",
                {"Retry-After": settings.retry_after_header},
            )
        return {"status": "ready"}

    return api


def application(settings: ServeSettings, env_vars: dict[str, str] | None = None):
    """The Serve application for `settings`: the ingress in front of `settings.replicas` model replicas.

    Every limit comes from the settings: the model's batch and queue (max_ongoing_requests, max_queued_requests,
    refused with 503 and Retry-After), and an ingress that takes INGRESS_HEADROOM times what the model can hold,
    so that refusals come from it as JSON. `env_vars` go to the ingress's environment (e.g. SENTIMENT_API_TOKEN
    when the Ray cluster was started without it)."""
    settings = settings.checked()
    refusal = {"status_code": 503, "retry_after_s": settings.retry_after_s}
    model = SentimentModel.options(
        num_replicas=settings.replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_queued_requests=settings.max_queued_requests,
        backpressure_config=refusal,
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
        max_constructor_retry_count=3,  # a model folder that fails to load fails the deployment in seconds
    ).bind(settings)
    ingress_actor = {"num_cpus": 0, **({"runtime_env": {"env_vars": dict(env_vars)}} if env_vars else {})}
    return SentimentAPI.options(
        max_ongoing_requests=settings.ingress_max_ongoing_requests,
        max_queued_requests=settings.ingress_max_ongoing_requests,
        backpressure_config=refusal,
        ray_actor_options=ingress_actor,
    ).bind(model, settings)


def build_app(args: dict):
    """The application builder `serve run serving/config.yaml` calls with the config file's `args`."""
    return application(settings_from_args(args or {}))
