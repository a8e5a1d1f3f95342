"""Batch prediction split across processes with `accelerate launch`.

    accelerate launch --num_processes 2 --cpu inference/predict.py --file big.csv --output out.csv

Every process reads the same file and scores one contiguous share of its rows; each writes its
share's predictions to a shard file beside --output, then the main process waits for all of them,
merges the shards in input order into --output and removes them. Outside `accelerate launch`
(one process), none of this runs and nothing here is imported by anything heavy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Launch:
    """This process's place in a multi-process launch."""

    process_index: int
    num_processes: int
    device: object  # torch.device: this process's GPU under a multi-GPU launch, else the CPU
    wait_for_everyone: Callable[[], None]

    @property
    def is_main(self) -> bool:
        return self.process_index == 0


def current_launch() -> Launch | None:
    """The launch this process belongs to, or None when it runs alone (the usual single-process CLI)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState  # sets up the process group (gloo on the CPU, NCCL on GPUs)

    state = PartialState()
    return Launch(state.process_index, state.num_processes, state.device, state.wait_for_everyone)


# ----------------------------------------------------------------------------- pure helpers


def shard_range(num_rows: int, num_shards: int, index: int) -> range:
    """Rows of shard `index`: contiguous, in order, sizes differing by at most one, together every row once."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"shard {index} of {num_shards} does not exist.")
    base, extra = divmod(num_rows, num_shards)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def shard_path(output: Path, index: int, num_shards: int) -> Path:
    """Where shard `index` of `output` is written: a hidden file beside it, so it is on the same disk."""
    output = Path(output)
    return output.with_name(f".{output.name}.shard-{index:05d}-of-{num_shards:05d}.jsonl")


def write_shard(rows: list[dict], path: Path) -> None:
    """One JSON object per row: prediction rows are plain str/float/None values, so this is lossless."""
    with Path(path).open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_shards(paths: list[Path]) -> list[dict]:
    """The rows of every shard, in the order of `paths`."""
    rows = []
    for path in paths:
        with Path(path).open(encoding="utf-8") as file:
            rows.extend(json.loads(line) for line in file if line.strip())
    return rows


# ----------------------------------------------------------------------------- the launch glue


def score_in_shares(
    launch: Launch, texts: list[str], score: Callable[[list[str]], list[dict]], output: Path
) -> list[dict] | None:
    """Score this process's share of `texts` with `score`; the main process gets every row back, in order.

    The other processes get None: their shares reach the output through the main process.
    """
    share = shard_range(len(texts), launch.num_processes, launch.process_index)
    shards = [shard_path(output, index, launch.num_processes) for index in range(launch.num_processes)]
    write_shard(score(texts[share.start : share.stop]), shards[launch.process_index])
    launch.wait_for_everyone()  # every shard is complete past this point
    if not launch.is_main:
        return None
    rows = read_shards(shards)
    for path in shards:
        path.unlink()
    if len(rows) != len(texts):
        raise RuntimeError(
            f"The shards hold {len(rows)} rows for {len(texts)} inputs; a process wrote an incomplete share."
        )
    return rows
