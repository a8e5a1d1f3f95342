"""Where the model runs: the device chosen for a run, which matrix instructions this CPU has (and so whether
bf16 or int8 is its fast precision), and the device's name as people read it.

Imports nothing heavy at load: the torch-free ONNX backend asks this module about the CPU too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from training.errors import ModelLoadError


def pick_device(requested: str | None = None):
    """The torch.device to run on: the one asked for, else the first CUDA GPU, else Apple's GPU (MPS), else the CPU.

    MPS is chosen by the same rule as CUDA but has not been measured in this project (docs/speed.md)."""
    import torch

    if requested not in (None, "", "auto"):
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"Device '{requested}' was asked for, but no CUDA GPU is available. Use --device cpu.")
        if device.type == "mps" and not mps_available():
            raise ModelLoadError(
                f"Device '{requested}' was asked for, but Apple's Metal (MPS) backend is not available here "
                f"(it needs an Apple Silicon Mac and a PyTorch built with MPS). Use --device cpu."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if mps_available() else "cpu")


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


CPU_BF16_SWITCH = "SENTIMENT_CPU_BF16"  # set to 0: behave as on a CPU without bf16 hardware (no AMX)
CPU_INT8_SWITCH = "SENTIMENT_CPU_INT8"  # set to 0: behave as on a CPU without fast int8 (never int8 by 'auto')
ONEDNN_ISA_CAP = "ONEDNN_MAX_CPU_ISA"  # oneDNN's own cap on the instructions it uses (its documented variable)

# oneDNN's instruction-set levels, lowest first, with the /proc/cpuinfo flags each adds. ONEDNN_MAX_CPU_ISA=X
# keeps the flags of X and the levels below it: the benchmark sets it to measure "this CPU without AMX".
ISA_LEVELS = (
    ("SSE41", ()),
    ("AVX", ("avx",)),
    ("AVX2", ("avx2", "fma")),
    ("AVX2_VNNI", ("avx_vnni",)),
    ("AVX2_VNNI_2", ()),
    ("AVX512_CORE", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX512_CORE_VNNI", ("avx512_vnni",)),
    ("AVX512_CORE_BF16", ("avx512_bf16",)),
    ("AVX512_CORE_FP16", ("avx512_fp16",)),
    ("AVX512_CORE_AMX", ("amx_tile", "amx_int8", "amx_bf16")),
    ("AVX512_CORE_AMX_FP16", ("amx_fp16",)),
)
MATRIX_FLAGS = frozenset(flag for _, flags in ISA_LEVELS for flag in flags)
# PyTorch's own probe, for a CPU without /proc/cpuinfo (macOS, Windows): what each answer implies.
TORCH_CAPABILITY_FLAGS = {"AVX2": ("avx", "avx2", "fma"), "AVX512": ("avx", "avx2", "fma", "avx512f")}


def cpu_features(cpuinfo: str | None = None, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The matrix instruction sets this CPU offers (names as /proc/cpuinfo spells them: avx2, avx512_vnni,
    amx_bf16, ...), less those above ONEDNN_MAX_CPU_ISA when it is set. `cpuinfo` and `environ` default to
    this machine's /proc/cpuinfo and environment; elsewhere PyTorch's capability probe answers, if installed."""
    environ = os.environ if environ is None else environ
    cpuinfo = _proc_cpuinfo() if cpuinfo is None else cpuinfo
    flags_line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags_line is not None:
        flags = set(flags_line.split(":", 1)[1].split()) & MATRIX_FLAGS
    else:
        flags = set(_torch_capability_flags())
    cap = environ.get(ONEDNN_ISA_CAP, "").strip().upper()
    names = [name for name, _ in ISA_LEVELS]
    if cap in names:  # anything else (ALL, DEFAULT, unset) caps nothing, as in oneDNN
        allowed = {flag for _, level in ISA_LEVELS[: names.index(cap) + 1] for flag in level}
        flags &= allowed
    return frozenset(flags)


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    """This machine's /proc/cpuinfo ('' where there is none), read once: it is long on a large server."""
    path = Path("/proc/cpuinfo")
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _torch_capability_flags() -> tuple[str, ...]:
    try:
        import torch
    except ImportError:
        return ()
    flags = TORCH_CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), ())
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, present since PyTorch 2.3
    return (*flags, "amx_tile", "amx_bf16") if amx and amx() else flags


def _switched_off(name: str) -> bool:
    return os.environ.get(name, "").strip() == "0"


def bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX), so bf16 is the fast CPU precision.
    Elsewhere bf16 is emulated (AVX-512 without AMX) or converted (AVX2) and no faster than fp32.

    SENTIMENT_CPU_BF16=0 in the environment answers no on any CPU, so every 'auto' precision (training,
    serving, the app) behaves as on a CPU without AMX."""
    if _switched_off(CPU_BF16_SWITCH):
        return False
    return {"amx_tile", "amx_bf16"} <= cpu_features()


def int8_is_fast() -> bool:
    """Whether this x86 CPU has the integer dot products int8 inference is built on: AVX2 (vpmaddubsw), VNNI or AMX.

    The int8 kernels both backends use (fbgemm, onnxruntime's MLAS) need one of them; without (an older x86,
    an ARM CPU) int8 is no faster or computes differently, so 'auto' stays on fp32. SENTIMENT_CPU_INT8=0
    answers no on any CPU."""
    if _switched_off(CPU_INT8_SWITCH):
        return False
    return bool(cpu_features() & {"avx2", "avx_vnni", "avx512_vnni", "amx_int8"})


def describe_device(device) -> str:
    """A person-readable name: 'CPU', 'Apple GPU (MPS)' or the GPU's name."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        return f"GPU: {torch.cuda.get_device_name(device)}"
    if kind == "mps":
        return "Apple GPU (MPS)"
    return "CPU"
