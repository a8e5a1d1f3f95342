"""Turn the IMDb copy's star ratings into a four-label task: a folder of train.parquet and test.parquet.

    python scripts/star_ratings.py --data ../shared/data/imdb --output results/imdb_stars
    python training/train.py --data results/imdb_stars --label-column stars --labels terrible,poor,good,excellent ...

IMDb's parquet files carry each review's rating (1-4 and 7-10 stars; the 5s and 6s were left out of the
dataset). Each review gets a `stars` label: terrible (1-2), poor (3-4), good (7-8), excellent (9-10).
The recipe and its figures: docs/labels.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

STAR_BANDS = {"terrible": (1, 2), "poor": (3, 4), "good": (7, 8), "excellent": (9, 10)}
LABEL_ORDER = ",".join(STAR_BANDS)


def star_label(rating: int) -> str:
    """The band a rating falls in, e.g. 8 -> good."""
    for name, (low, high) in STAR_BANDS.items():
        if low <= rating <= high:
            return name
    raise ValueError(f"No star band holds a rating of {rating} (IMDb rates 1-4 and 7-10).")


def with_stars(frame: pd.DataFrame) -> pd.DataFrame:
    """text, rating and the `stars` label of each review."""
    result = frame[["text", "rating"]].copy()
    result["stars"] = result["rating"].map(star_label)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb"), help="The IMDb parquet folder.")
    parser.add_argument(
        "--output", type=Path, default=Path("results/imdb_stars"), help="Where the four-label files go."
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        frame = with_stars(pd.read_parquet(args.data / f"{split}.parquet", columns=["text", "rating"]))
        frame.to_parquet(args.output / f"{split}.parquet", index=False)
        print(
            f"{split}: {len(frame)} reviews, " + ", ".join(f"{k} {v}" for k, v in frame["stars"].value_counts().items())
        )


if __name__ == "__main__":
    main()
