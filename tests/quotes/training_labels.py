"""docs/training.md's and docs/labels.md's figures: the shipped run, the star ratings, class weights."""

from __future__ import annotations

from tests.quotes import SHIPPED_CONFIG, SHIPPED_METRICS

QUOTES = []


def sweep_row(record: dict) -> str:
    """The shipped row of docs/training.md's sweep table: validation accuracy and F1, run time, samples/s."""
    return "| {:.4f} | {:.4f} | {:.0f} s | {:.0f} |".format(
        record["validation"]["accuracy"],
        record["validation"]["f1"],
        record["training"]["train_runtime_s"],
        record["training"]["train_samples_per_second"],
    )


QUOTES += [
    # docs/training.md: the shipped run, from the adapter's own records.
    ("docs/training.md", SHIPPED_METRICS, ("training/num_train_examples", "IMDb training split, {:,} reviews,")),
    (
        "docs/training.md",
        SHIPPED_METRICS,
        ("training/num_validation_examples", "with {:,} held out for model selection"),
    ),
    (
        "docs/training.md",
        SHIPPED_METRICS,
        lambda r: (
            "{device} ({train_runtime_s} s from loading the data to the last validation pass, "
            "{train_samples_per_second} training samples/s in the".format(**r["training"])
        ),
    ),
    ("docs/training.md", SHIPPED_METRICS, sweep_row),
    ("docs/training.md", SHIPPED_CONFIG, ("training/command", "```bash\n{}\n```")),
]
