"""The model loads when `streamlit run app.py` starts, not when the first visitor arrives (issue 15): the
server's start-up hook starts the load, GET /api/ready says when it can answer, and the page is drawn at once.

    python -m pytest -s tests/test_startup.py      # prints the page and first-prediction times

The browser test prints the times docs/app.md describes (it keeps no record): from `streamlit run` to the
health check and to the text box on screen, and from readiness to the first prediction on screen.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import SHIPPED_MODEL_DIR
from webapp import runtime
from webapp.harness import health_check, running_app, start_app
from webapp.runtime import ModelLoader

pytestmark = pytest.mark.slow  # each test starts a Streamlit server: left out of the fast loop

READY_PATH = "/api/ready"
REVIEW = "A wonderful, moving film with superb acting, though the ending drags a little."


def readiness(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    """The readiness endpoint's status code and JSON answer."""
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_state(url: str, states: set[str], timeout_s: float) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, answer = readiness(url)
        if answer["state"] in states or time.monotonic() > deadline:
            return status, answer
        time.sleep(0.1)


def test_the_model_loads_at_server_start_without_any_visitor():
    """No session is ever opened: the server alone loads the model, and /api/ready goes from 503 to 200.
    Before: the load started with the first visit, and there was no readiness endpoint (404)."""
    with running_app(env={runtime.MODEL_DIR_ENV: str(SHIPPED_MODEL_DIR)}) as server:
        status, answer = readiness(server.url)
        assert (status, answer["state"]) in {(503, "loading"), (200, "ready")}, answer
        status, answer = wait_for_state(server.url, {"ready", "failed"}, timeout_s=180)
        assert (status, answer["state"]) == (200, "ready"), answer
        assert answer["model_dir"] and answer["seconds"] > 0


def test_a_failed_load_is_reported_as_not_ready_without_details(tmp_path):
    with running_app(env={runtime.MODEL_DIR_ENV: str(tmp_path / "no_adapter")}) as server:
        status, answer = wait_for_state(server.url, {"failed"}, timeout_s=120)
        assert status == 503 and answer["state"] == "failed" and answer["error"] == "ModelLoadError", answer
        assert str(tmp_path) not in json.dumps(answer)  # no server paths outside the project
        assert health_check(server.url)[0]  # the server itself stays healthy: the page shows the error


def test_one_loader_per_folder_is_shared_and_reports_its_readiness(monkeypatch):
    monkeypatch.setattr(runtime, "_LOADERS", {})
    gate = threading.Event()
    monkeypatch.setattr(runtime, "ModelLoader", lambda folder: ModelLoader(folder, load=lambda _: gate.wait(5)))
    first = runtime.model_loader("a")
    assert runtime.model_loader("a") is first and runtime.model_loader("b") is not first
    assert first.readiness()["state"] == "loading"
    gate.set()
    assert first.wait(5) == "ready" and first.readiness()["state"] == "ready"


def test_the_page_imports_nothing_that_loads_torch():
    """The page is drawn while the model loads only if drawing it never waits for torch's import (seconds)."""
    import subprocess
    import sys

    from training.paths import PROJECT_ROOT

    code = (
        "import sys, runpy\n"
        "import webapp.runtime, webapp.uploads, webapp.results, webapp.render\n"
        "runpy.run_path('app.py', run_name='app')\n"  # as `streamlit run` imports it to find the server
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.browser
def test_the_page_comes_at_once_and_the_first_prediction_soon_after_readiness():
    """Chromium is started first; then `streamlit run app.py`; the page is opened as soon as the health check
    answers, a review is typed while the model loads, and its prediction appears once the model is ready."""
    import shutil

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        server = start_app(env={runtime.MODEL_DIR_ENV: None})
        try:
            server.wait_until_healthy(timeout_s=60, interval_s=0.02)
            healthy_s = server.elapsed_s()
            ready_at: list[float] = []

            def watch_readiness() -> None:
                while not ready_at and server.elapsed_s() < 300:
                    if readiness(server.url)[0] == 200:
                        ready_at.append(server.elapsed_s())
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch_readiness, daemon=True)
            watcher.start()
            page.goto(server.url)
            box = page.get_by_role("textbox", name="Movie review")
            box.wait_for(timeout=60_000)
            page_s = server.elapsed_s()
            loading_shown = page.get_by_text("Loading the model").count() > 0
            box.fill(REVIEW)
            box.press("Control+Enter")
            page.locator("h2").filter(has_text="POSITIVE").wait_for(timeout=300_000)
            predicted_s = server.elapsed_s()
            watcher.join(10)
        finally:
            browser.close()
            server.stop()
            server.log.unlink(missing_ok=True)
    assert ready_at, "the readiness endpoint never said ready"
    after_ready_s = predicted_s - ready_at[0]
    print(
        f"\nfrom `streamlit run`: health ok {healthy_s:.2f} s, text box on screen {page_s:.2f} s "
        f"(loading notice shown: {loading_shown}), ready {ready_at[0]:.2f} s, first prediction on screen "
        f"{predicted_s:.2f} s ({after_ready_s:.2f} s after readiness)"
    )
    # Generous bounds for a shared CI machine; the targets (2 s each) are in docs/app.md.
    assert page_s < ready_at[0] or page_s < 10, "the page waited for the model"
    assert after_ready_s < 10


def test_heavy_work_hands_freed_memory_back(monkeypatch):
    """Each explanation used to leave 350-500 MB resident in its thread's malloc arena; the queue trims after each job."""
    import sys

    trims: list[bool] = []
    monkeypatch.setattr(runtime, "release_freed_memory", lambda: trims.append(True) or True)
    queue = runtime.WorkQueue(slots=1, wait_s=1)
    with queue.slot():
        assert trims == [True]  # before the job: what others freed
    assert trims == [True, True]  # and after it
    monkeypatch.undo()
    assert runtime.release_freed_memory() is sys.platform.startswith("linux")
