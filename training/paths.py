"""Where the project's files live: the one place that knows the repo's layout."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = PROJECT_ROOT / "trained_model"
RESULTS_DIR = PROJECT_ROOT / "results"
