"""One Predictor shared by many threads, as Streamlit's st.cache_resource shares it between sessions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from inference.predictor import Predictor
from tests.conftest import expected_default_precision, real_default_precision

pytestmark = pytest.mark.slow  # several processes or 16 threads: seconds each, left out of the fast loop

THREADS = 16
PREDICTIONS_PER_THREAD = 100


@pytest.mark.parametrize("precision", [pytest.param("auto", marks=pytest.mark.default_precision), "int8"])
def test_sixteen_threads_on_one_predictor_get_exactly_the_sequential_results(precision, tiny_adapter, small_imdb):
    # The app's configuration: 'auto' as this machine resolves it for a user (bf16 on an AMX CPU; the tests'
    # switch lifted), one review per call; and int8, the CPU speed option, whose quantized kernels keep their
    # own state.
    if precision == "auto":
        with real_default_precision():
            predictor = Predictor.from_pretrained(tiny_adapter)
        assert predictor.precision == expected_default_precision(tiny_adapter, predictor.device.type)
    else:
        predictor = Predictor.from_pretrained(tiny_adapter, device="cpu", precision=precision)
        assert predictor.precision == "int8"
    reviews = pd.read_parquet(small_imdb / "test.parquet")["text"].tolist()[:PREDICTIONS_PER_THREAD]
    sequential = [predictor.predict_one(review) for review in reviews]

    def session(thread: int) -> list:
        # Each thread starts at a different review, so different reviews are in flight at once.
        order = [(thread + step) % len(reviews) for step in range(PREDICTIONS_PER_THREAD)]
        return [(index, predictor.predict_one(reviews[index])) for index in order]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(session, range(THREADS)))

    assert sum(len(answers) for answers in results) == THREADS * PREDICTIONS_PER_THREAD
    for answers in results:
        for index, prediction in answers:
            assert prediction == sequential[index]  # exactly: label, confidence and every probability
