"""The default path on this machine: 'auto' as a user gets it.

conftest.py sets SENTIMENT_CPU_BF16=0 so that most tests behave alike on every CPU; on a CPU with AMX that
means they never run bf16, the precision the app, the CLI and evaluation serve there. The tests here lift the
switch (conftest.real_default_precision), check which precision 'auto' chose on this CPU, and check that the
shipped adapter in it keeps exact fp32's answers on a fixed sample. Marked default_precision; they run in every
pytest run, the fast loop included (46 s on 2 busy cores, load 5: one more load of the shipped adapter and 48
reviews at 512 tokens in both precisions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHIPPED_MODEL_DIR, expected_default_precision, real_default_precision

pytestmark = pytest.mark.default_precision

SAMPLE_SIZE = 48
# How far the served precision may move the shipped adapter's calibrated probabilities from exact fp32's.
MAX_PROBABILITY_DIFFERENCE = {
    "bf16": 0.02,  # the project's bf16 rule (docs/gpu.md); 0.0099 here (2-core Xeon with AMX)
    "int8": 0.10,  # the gated scheme of trained_model/int8.json: 0.080 on this sample, the same integers on
    # AVX2, VNNI and AMX (inference/int8.py); its gate saw logits move by up to 0.60 on 2,500 validation reviews
    "fp32": 1e-6,  # the same exact path loaded twice: float rounding at most
}
# Labels: the project's rule is at most 0.5% of labels changed, a rate measured on many reviews (500 for bf16 on
# a GPU, 2,500 in the int8 gate). On 48 reviews it means none may change where fp32 is clear of the boundary by
# more than the tolerance; nearer it, a flip is the tolerance at work (this sample's closest review: 0.0105).


@pytest.fixture(scope="module")
def default_predictor():
    """The shipped adapter loaded as the app loads it (webapp.runtime: 'auto', calibrated, one warm-up), with the
    machine's own default precision."""
    from webapp.runtime import load_and_warm_up

    with real_default_precision():
        return load_and_warm_up(str(SHIPPED_MODEL_DIR))


@pytest.fixture(scope="module")
def sample(imdb_dir) -> list[str]:
    from training.data import stratified_subset

    frame = pd.read_parquet(imdb_dir / "test.parquet", columns=["text", "label"])
    return stratified_subset(frame, SAMPLE_SIZE, seed=0)["text"].tolist()


def test_auto_serves_the_precision_this_cpu_computes_fastest(default_predictor):
    expected = expected_default_precision(SHIPPED_MODEL_DIR, default_predictor.device.type)
    info = default_predictor.info()
    assert (default_predictor.precision, info["precision"]) == (expected, expected)
    assert info["precision_reason"].startswith("auto:") and "SENTIMENT_CPU_BF16=0" not in info["precision_reason"]


def test_the_default_precision_keeps_exact_fp32s_answers_on_a_fixed_sample(
    default_predictor, shipped_predictor, sample, record_property
):
    precision, tolerance = default_predictor.precision, MAX_PROBABILITY_DIFFERENCE[default_predictor.precision]
    exact = shipped_predictor.predict_proba(sample)
    served = default_predictor.predict_proba(sample)
    changed = exact.argmax(axis=1) != served.argmax(axis=1)
    clear = np.abs(exact.max(axis=1) - 0.5) > tolerance  # fp32 decides these by more than the tolerance
    largest = float(np.abs(exact - served).max())
    record_property("precision", precision)  # into the JUnit XML beside its figures
    record_property("labels_changed", int(changed.sum()))
    record_property("max_probability_difference", round(largest, 6))
    assert not np.any(changed & clear), f"{precision} changed {int((changed & clear).sum())} clear labels of fp32's"
    assert largest <= tolerance, f"{precision}: a probability moved by {largest:.4f} (tolerance {tolerance})"
