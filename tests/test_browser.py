"""The app as a user meets it: `streamlit run app.py` on loopback, driven by headless Chromium.

Prints the time from starting the server process to the first prediction on screen (the README's
time-to-first-prediction figure) and saves results/app_screenshot.png.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT = PROJECT_ROOT / "results" / "app_screenshot.png"
FAILURE_SCREENSHOT = SCREENSHOT.with_name("app_screenshot_failure.png")
SERVER_START_TIMEOUT_S = 60
PREDICTION_TIMEOUT_MS = 60_000
REVIEW = "A wonderful, moving film. The acting is superb and I loved every minute of it."

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer 'ok' within {timeout_s:.0f} s")


@pytest.fixture
def sync_api():
    """Playwright's sync API, or a skip when it or the system Chromium is missing (checked before any server starts)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found; install Debian's chromium to run the browser test")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@dataclasses.dataclass(frozen=True)
class RunningApp:
    url: str
    started: float  # time.monotonic() just before the server process was started
    log: Path  # the server's stdout and stderr

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@pytest.fixture
def app_server(sync_api, tmp_path):
    """`streamlit run app.py` on a free loopback port, as a user starts it; stopped after the test."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    environment.pop("SENTIMENT_MODEL_DIR", None)  # the shipped adapter
    log_path = tmp_path / "streamlit.log"
    with log_path.open("w") as log:
        app = RunningApp(f"http://127.0.0.1:{port}", time.monotonic(), log_path)
        server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(f"{app.url}/_stcore/health", server, SERVER_START_TIMEOUT_S)
            print(f"\nserver healthy after {app.elapsed_s():.1f} s")
            yield app
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_review_typed_in_the_browser_gets_a_prediction(sync_api, app_server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        SCREENSHOT.parent.mkdir(exist_ok=True)
        try:
            page.goto(app_server.url)
            review_box = page.get_by_role("textbox", name="Movie review")
            review_box.wait_for(timeout=PREDICTION_TIMEOUT_MS)  # shown once the model has loaded
            print(f"model loaded, review box shown after {app_server.elapsed_s():.1f} s")
            review_box.fill(REVIEW)
            review_box.press("Control+Enter")  # applies a text area in Streamlit
            page.locator("h2").filter(has_text="POSITIVE").wait_for(timeout=PREDICTION_TIMEOUT_MS)
            first_prediction_s = app_server.elapsed_s()

            # The header shows while the run is still streaming the rest of the result, so wait for each
            # part (expect retries) rather than asserting on a snapshot.
            expect = sync_api.expect
            expect(page.get_by_text("Confidence")).to_be_visible()
            expect(page.get_by_text("POSITIVE: ")).to_be_visible()  # the probability bars' labels
            expect(page.get_by_text("NEGATIVE: ")).to_be_visible()
            expect(page.get_by_text("ms on CPU").or_(page.get_by_text("ms on GPU"))).to_be_visible()  # the last element
            expect(page.get_by_test_id("stSidebar").get_by_text("Running on")).to_be_visible()
            page.wait_for_timeout(500)  # let the bars finish their animation
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        except Exception:
            page.screenshot(path=str(FAILURE_SCREENSHOT), full_page=True)
            print(f"saved {FAILURE_SCREENSHOT}; server log:\n{app_server.log.read_text()[-5000:]}")
            raise
        finally:
            browser.close()
    print(f"time from `streamlit run` to first prediction on screen: {first_prediction_s:.1f} s")
