"""The app part: `streamlit run app.py` until the first prediction shows in headless Chromium, then the
per-request latency of the app script through streamlit's AppTest. Named app_latency, not app, so that it
cannot be taken for the project's app.py."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.bench_config import BenchConfig
from benchmarks.timing import latency_summary, ratio, sample_reviews, thread_environment
from training.paths import PROJECT_ROOT

# Debian and Ubuntu name the browser chromium (or chromium-browser); Google's build is google-chrome.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
APP_REVIEW = "A wonderful, moving film. The acting is superb and I loved every minute of it."


def bench_app(config: BenchConfig, model_dir: Path, inference_result: dict | None) -> dict:
    """Start-up to the first prediction in a real browser, then per-request latency of the app script."""
    result = {"start_to_first_prediction": browser_first_prediction(model_dir, config.threads)}
    result["per_request"] = app_request_latency(config, model_dir)
    if inference_result and "systems" in inference_result:
        result["per_request_p50_ratio_to_pipeline"] = ratio(
            result["per_request"]["latency"]["p50_ms"], inference_result["systems"]["pipeline"]["latency"]["p50_ms"]
        )
    return result


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH (the one scripts/install_test_tools.sh checked), or None."""
    return next((found for name in BROWSER_NAMES if (found := shutil.which(name))), None)


def browser_first_prediction(model_dir: Path, threads: int | None) -> dict:
    """`streamlit run app.py` as a user starts it; headless Chromium types a review and waits for the verdict."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (scripts/install_test_tools.sh)"}
    from webapp.harness import running_app

    chromium = find_browser()
    if chromium is None:
        return {"skipped": f"no browser found ({', '.join(BROWSER_NAMES)})"}
    environment = {"SENTIMENT_MODEL_DIR": str(model_dir), **thread_environment(threads)}
    with running_app(env=environment) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(server.url, timeout=60_000)
        review_box = page.get_by_role("textbox", name="Movie review")
        review_box.wait_for(timeout=120_000)  # shown once the model has loaded
        box_s = server.elapsed_s()
        review_box.fill(APP_REVIEW)
        review_box.press("Control+Enter")  # applies a text area in Streamlit
        shown = page.get_by_text("Predicted in")  # the result's last line
        shown.wait_for(timeout=120_000)
        first_prediction_s = server.elapsed_s()
        caption = shown.inner_text()
        browser.close()
    return {
        "seconds": round(first_prediction_s, 2),
        "review_box_shown_s": round(box_s, 2),
        "app_caption": caption,
        "method": "wall time from starting `streamlit run app.py` to the verdict on screen in headless Chromium",
    }


def app_request_latency(config: BenchConfig, model_dir: Path) -> dict:
    """Each request: a review typed into the app and the whole script rerun (prediction and rendering)."""
    from streamlit.testing.v1 import AppTest

    import app
    from webapp.runtime import MODEL_DIR_ENV

    reviews = sample_reviews(config.data, config.app_requests, config.seed + 1)["text"].tolist()
    previous = os.environ.get(MODEL_DIR_ENV)
    os.environ[MODEL_DIR_ENV] = str(model_dir)
    try:
        started = time.perf_counter()
        test = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=300).run()
        first_run_s = time.perf_counter() - started
        timings = []
        for review in [APP_REVIEW, *reviews]:
            started = time.perf_counter()
            test.text_area(key=app.REVIEW_KEY).input(review).run()
            timings.append(time.perf_counter() - started)
            if test.exception:
                raise RuntimeError(f"the app raised: {test.exception[0].value}")
    finally:
        if previous is None:
            os.environ.pop(MODEL_DIR_ENV, None)
        else:
            os.environ[MODEL_DIR_ENV] = previous
    return {
        "latency": latency_summary(timings[1:]),
        "first_run_s": round(first_run_s, 2),
        "method": "streamlit.testing AppTest: the review set in the text area and the script rerun, in process "
        "(no browser or network); the first request is a warm-up, not counted",
    }
