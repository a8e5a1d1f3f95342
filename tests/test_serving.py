"""The sentiment API (serving/) end to end: a real local Ray Serve on loopback, the tiny adapter on the CPU.

One Ray and one deployment are shared by the module (starting them is most of its time); tests that need other
settings redeploy and put the shared one back. Every request loop is bounded in count and time. The settings,
the config file and the request checks are also tested directly, without Ray.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import json
import socket
import threading
import time

import pytest

from serving.settings import CONFIG_FILE, ServeSettings, load_config, settings_from_args
from training.errors import DataError

HOST = "127.0.0.1"
TOKEN = "test-token-with-enough-entropy"
REVIEWS = [
    "A wonderful film, moving and beautifully acted.",
    "Two hours I will never get back. Dreadful.",
    "It was fine, I suppose; nothing special either way.",
]
# Small limits, so the tests can reach each of them: 2 replicas x 2 requests running, 4 queued.
TEST_SETTINGS = dict(
    precision="fp32",
    replicas=2,
    cpus_per_replica=0.5,
    max_texts=4,
    max_text_chars=2_000,
    max_body_bytes=16_384,
    max_batch_size=8,
    max_ongoing_requests=2,
    max_queued_requests=4,
    retry_after_s=1.0,
)


# ----------------------------------------------------------------------------- settings and config, no Ray


def test_the_checked_in_config_file_holds_the_settings_defaults():
    config = load_config(CONFIG_FILE)
    assert config.settings == ServeSettings() and (config.host, config.port) == (HOST, 8000)


def test_a_config_file_with_unknown_keys_and_wrong_types_is_refused_all_at_once():
    with pytest.raises(DataError) as refusal:
        settings_from_args({"max_textz": 3, "replicas": "two", "batching": 1})
    assert all(
        part in str(refusal.value) for part in ("unknown setting 'max_textz'", "replicas must be int", "batching")
    )


def test_settings_problems_are_reported_together(tiny_adapter):
    settings = ServeSettings(model=str(tiny_adapter), max_texts=64, max_batch_size=8, max_queued_requests=0)
    problems = " ".join(settings.problems())
    assert "max_batch_size (8) must be at least max_texts (64)" in problems and "max_queued_requests" in problems
    assert ServeSettings(model=str(tiny_adapter)).problems() == []
    with pytest.raises(DataError, match="No adapter folder at /no/such/adapter"):
        ServeSettings(model="/no/such/adapter").checked()


def test_flags_override_the_config_file(tmp_path):
    from serving.cli import parse_args

    config = parse_args(["--port", "9000", "--replicas", "3", "--no-batching", "--model", str(tmp_path)])
    assert (config.host, config.port) == (HOST, 9000)
    assert (config.settings.replicas, config.settings.batching, config.settings.model) == (3, False, str(tmp_path))
    assert config.settings.max_queued_requests == ServeSettings().max_queued_requests  # the file's, untouched


def test_the_ingress_checks_texts_before_the_model_sees_them():
    from serving.api import text_problem

    settings = ServeSettings(max_texts=2, max_text_chars=10)
    assert text_problem(["fine"], settings) is None
    assert "1 to 2 reviews" in text_problem([], settings) and "1 to 2 reviews" in text_problem(["a"] * 3, settings)
    assert "at most 10" in text_problem(["x" * 11], settings)
    assert "Review 2 is empty" in text_problem(["ok", "  "], settings)
    assert "not UTF-8" in text_problem(["\ud800"], settings)


def test_the_token_is_compared_as_a_bearer_token():
    from serving.http import authorized

    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer {TOKEN}", TOKEN)
    assert not any(authorized(header, TOKEN) for header in (None, "", TOKEN, f"Basic {TOKEN}", "Bearer wrong"))


# ----------------------------------------------------------------------------- a real Ray Serve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Api:
    """A loopback client: each call is one connection with a timeout, answering (status, headers, body)."""

    def __init__(self, port: int):
        self.port = port

    def call(self, method, path, body=None, headers=None, timeout=60.0, raw: bytes | None = None):
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            sent = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            payload = response.read()
            try:
                payload = json.loads(payload)
            except ValueError:
                payload = payload.decode("utf-8", "replace")
            return response.status, {key.lower(): value for key, value in response.getheaders()}, payload
        finally:
            connection.close()

    def predict(self, texts, **options):
        return self.call("POST", "/v1/predict", {"texts": texts}, **options)


def deploy(settings: ServeSettings, env_vars=None, name="sentiment", route_prefix="/"):
    from ray import serve

    from serving.api import application

    return serve.run(application(settings, env_vars), name=name, route_prefix=route_prefix)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the session (test_bulk.py imports this fixture too)."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="module")
def service(local_ray, tiny_adapter):
    """The API on a free loopback port. Before the real deployment, one whose model replicas cannot be placed (they
    ask for more CPUs than the machine has) shows the API up and answering while no model does."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": HOST, "port": port})
    api = Api(port)
    settings = ServeSettings(model=str(tiny_adapter), **TEST_SETTINGS)
    unplaceable = dataclasses.replace(settings, replicas=1, cpus_per_replica=1000.0)
    threading.Thread(target=deploy_quietly, args=(unplaceable,), daemon=True).start()  # never becomes RUNNING
    wait_for(lambda: api.call("GET", "/healthz", timeout=10)[0] == 200, 120)
    before = {"readyz": api.call("GET", "/readyz"), "predict": api.predict(["Too early."])}
    deploy(settings)
    yield {"api": api, "settings": settings, "before": before}
    serve.shutdown()  # frees the replicas' CPUs for the other test modules


def deploy_quietly(settings: ServeSettings) -> None:
    """deploy() in a thread whose serve.run may never return, or fail once the real deployment replaces it."""
    with contextlib.suppress(Exception):
        deploy(settings)


def wait_for(condition, seconds: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except OSError:  # not listening yet
            pass
        time.sleep(interval)
    raise AssertionError(f"not true within {seconds} s")


def assert_json_error(answer, status: int, code: str | None = None) -> None:
    got, headers, body = answer
    assert got == status, answer
    assert headers["content-type"].startswith("application/json") and body["message"], answer
    assert "Traceback" not in json.dumps(body)
    if code is not None:
        assert body["error"] == code, answer
    if status == 503:
        assert int(headers["retry-after"]) >= 1


@pytest.mark.slow
def test_ready_only_once_the_model_answers(service):
    before = service["before"]  # the API was up (its /healthz answered 200), no model replica was
    assert_json_error(before["readyz"], 503, "not_ready")
    assert_json_error(before["predict"], 503, "model_loading")
    assert service["api"].call("GET", "/readyz")[:3:2] == (200, {"status": "ready"})


@pytest.mark.slow
def test_predictions_are_the_predictors_in_the_order_given(service, tiny_predictor):
    status, _, body = service["api"].predict(REVIEWS)
    assert status == 200, body
    expected = tiny_predictor.predict(REVIEWS)
    for got, want in zip(body["predictions"], expected, strict=True):
        assert got["label"] == want.label and got["probabilities"].keys() == want.probabilities.keys()
        assert got["confidence"] == pytest.approx(want.confidence, abs=1e-5)
        assert all(got["probabilities"][k] == pytest.approx(p, abs=1e-5) for k, p in want.probabilities.items())
        assert got["uncertain"] == (want.confidence < 0.75) and got["verdict"] == want.verdict(0.75)
    everyone_uncertain = service["api"].call("POST", "/v1/predict", {"texts": REVIEWS[:1], "uncertain_below": 1.0})
    assert everyone_uncertain[2]["predictions"][0]["verdict"] == "UNCERTAIN"


@pytest.mark.slow
def test_model_explain_and_docs(service, tiny_adapter):
    api = service["api"]
    status, _, model = api.call("GET", "/v1/model")
    assert status == 200 and model["backend"] == "pytorch" and model["labels"] == ["NEGATIVE", "POSITIVE"]
    assert model["adapter"] == str(tiny_adapter) and model["precision"] == "fp32" and "metrics" in model
    assert model["serving"]["max_texts"] == 4
    status, _, explanation = api.call("POST", "/v1/explain", {"text": REVIEWS[0]})
    assert status == 200 and explanation["words"] and explanation["label"] in ("NEGATIVE", "POSITIVE")
    assert api.call("GET", "/openapi.json")[2]["paths"].keys() >= {"/v1/predict", "/v1/explain", "/v1/model"}
    assert api.call("GET", "/docs")[0] == 200


@pytest.mark.slow
def test_every_bad_request_is_a_json_4xx_never_a_500(service):
    api, settings = service["api"], service["settings"]
    assert_json_error(api.predict([]), 422, "invalid_texts")
    assert_json_error(api.predict(["one"] * (settings.max_texts + 1)), 422, "invalid_texts")
    assert_json_error(api.predict(["fine", "   "]), 422, "invalid_texts")
    assert_json_error(api.predict(["x" * (settings.max_text_chars + 1)]), 422, "invalid_texts")
    assert_json_error(api.predict([REVIEWS[0], 42]), 422, "invalid_request")
    assert_json_error(api.call("POST", "/v1/predict", {"texts": ["a"], "extra": 1}), 422, "invalid_request")
    assert_json_error(api.call("POST", "/v1/explain", {"text": ""}), 422, "invalid_texts")
    hostile = [b"{not json", b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000, b'{"texts": "\\ud800"}', b"", b"null"]
    for raw in hostile:
        assert_json_error(api.call("POST", "/v1/predict", raw=raw), 422)
    assert_json_error(api.predict(["\ud800"], raw=b'{"texts": ["\\ud800"]}'), 422, "invalid_texts")
    too_big = json.dumps({"texts": ["y" * (settings.max_body_bytes + 10)]}).encode()
    assert_json_error(api.call("POST", "/v1/predict", raw=too_big), 413, "body_too_large")
    assert_json_error(chunked_post(api.port, "/v1/predict", too_big), 413, "body_too_large")  # no Content-Length
    assert_json_error(api.call("GET", "/v2/predict"), 404, "not_found")
    assert_json_error(api.call("DELETE", "/v1/predict"), 405, "method_not_allowed")


def chunked_post(port: int, path: str, data: bytes):
    """POST `data` in 1 kB chunks with Transfer-Encoding: chunked, so the server cannot know its size up front."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        chunks = (data[start : start + 1024] for start in range(0, len(data), 1024))
        connection.request("POST", path, body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow
def test_a_burst_beyond_the_queue_is_refused_at_once_with_503(service):
    """32 explanations at once (each far slower than a prediction) against 2 x 2 running + 4 queued."""
    api = service["api"]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: api.call("POST", "/v1/explain", {"text": REVIEWS[1]}), range(32)))
    statuses = [answer[0] for answer in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 4 and statuses.count(503) >= 1, statuses
    for answer in answers:
        if answer[0] == 503:
            assert_json_error(answer, 503, "overloaded")
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_a_replica_killed_under_load_loses_no_request(service):
    """Six clients keep predicting from before one of the two model replicas is killed until 3 s after: every
    request ends, in 200 or a JSON 503, and the other replica keeps answering."""
    import ray

    api, names = service["api"], replica_names("SentimentModel")
    assert len(names) == 2
    answers, killed_at, stop = [], [], threading.Event()

    def client(index):
        for _ in range(300):  # bounded in count, and by `stop` in time
            if stop.is_set():
                return
            answers.append((time.monotonic(), api.predict([REVIEWS[index % 3]], timeout=60)))

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(client, index) for index in range(6)]
        wait_for(lambda: len(answers) >= 12, 60, interval=0.02)
        killed_at.append(time.monotonic())
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        time.sleep(3)
        stop.set()
        for future in clients:
            future.result(timeout=120)  # raises if a request hung past its timeout
    after = [answer for at, answer in answers if at > killed_at[0]]
    assert all(answer[0] in (200, 503) for _, answer in answers), [a[0] for _, a in answers]
    for answer in after:
        if answer[0] == 503:
            assert_json_error(answer, 503)
    assert sum(answer[0] == 200 for answer in after) >= 6  # the other replica kept answering


def replica_names(deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::sentiment#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


@pytest.fixture
def second_app(service):
    """Deploys a second application beside the shared one (deploy()'s arguments) and deletes it afterwards."""
    from ray import serve

    deployed = []

    def deploy_second(settings: ServeSettings, **options):
        deployed.append(options["name"])
        deploy(dataclasses.replace(settings, replicas=1), **options)

    yield deploy_second
    for name in deployed:
        serve.delete(name)


@pytest.mark.slow
def test_with_a_token_every_route_but_the_health_checks_needs_it(service, second_app):
    """A second application with SENTIMENT_API_TOKEN in its environment; the shared one has none."""
    second_app(service["settings"], env_vars={"SENTIMENT_API_TOKEN": TOKEN}, name="secure", route_prefix="/secure")
    api, signed = service["api"], {"Authorization": f"Bearer {TOKEN}"}
    assert_json_error(api.call("POST", "/secure/v1/predict", {"texts": REVIEWS}), 401, "unauthorized")
    assert_json_error(api.call("POST", "/secure/v1/predict", {"texts": REVIEWS}, {"Authorization": "Bearer x"}), 401)
    assert_json_error(api.call("GET", "/secure/v1/model", headers={"Authorization": TOKEN}), 401)
    assert_json_error(api.call("GET", "/secure/docs"), 401)
    assert api.call("GET", "/secure/healthz")[0] == 200 and api.call("GET", "/secure/readyz")[0] == 200
    assert api.call("POST", "/secure/v1/predict", {"texts": REVIEWS}, signed)[0] == 200
    assert api.call("GET", "/secure/v1/model", headers=signed)[0] == 200
    assert api.predict(REVIEWS[:1])[0] == 200  # the shared application has no token


@pytest.mark.slow
def test_an_onnx_export_is_served_and_refuses_explanations(service, second_app, tiny_adapter, tiny_predictor, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from inference import export

    folder = tmp_path / "exported"
    assert export.cli(["--model", str(tiny_adapter), "--output", str(folder)]) == 0
    second_app(dataclasses.replace(service["settings"], model=str(folder)), name="export", route_prefix="/export")
    api = service["api"]
    status, _, body = api.call("POST", "/export/v1/predict", {"texts": REVIEWS})
    expected = tiny_predictor.predict(REVIEWS)
    assert status == 200 and [p["label"] for p in body["predictions"]] == [p.label for p in expected]
    assert api.call("GET", "/export/v1/model")[2]["backend"] == "onnxruntime"
    assert_json_error(api.call("POST", "/export/v1/explain", {"text": REVIEWS[0]}), 409, "explain_unsupported")
