"""Where the Ray work runs, for sentiment-serve and sentiment-bulk alike: the cluster RAY_ADDRESS names (or the one a
Ray job was submitted to), else a local Ray on this machine's CPUs.
"""

from __future__ import annotations


def connect_ray() -> None:
    """Join the running cluster, or start a local Ray sized to this machine; nothing when already connected."""
    import ray

    if not ray.is_initialized():
        ray.init()  # honours RAY_ADDRESS and a job submission's address; else a local Ray with every CPU


def cluster_resources() -> tuple[float, float]:
    """(CPUs, GPUs) Ray can schedule across the cluster (this machine when local)."""
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
