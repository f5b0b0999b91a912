"""Whether bf16 autocast pays off on this machine (native bf16 matrix instructions)."""

from __future__ import annotations

import functools
import sys

import torch

#: CPU flags (Linux ``/proc/cpuinfo``) of native bf16 matrix instructions: Intel AMX tiles and
#: AVX-512 BF16. Without them CPU bf16 matrix products are emulated and slower than fp32.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (:data:`CPU_BF16_FLAGS`).

    Read from ``/proc/cpuinfo`` on Linux; ``False`` elsewhere (macOS, Windows: fp32 stays the
    default, ``precision="bf16-mixed"`` can still be asked for).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(f in flags for f in CPU_BF16_FLAGS)
    except OSError:
        return False
    return False


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bf16 autocast is the fast choice on ``device`` (a CUDA GPU with bf16 support, or
    a CPU with native bf16 matrix instructions)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_has_fast_bf16()
    return False
