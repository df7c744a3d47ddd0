"""Which reduced precisions this machine computes natively, shared by training and serving."""

from __future__ import annotations

import torch


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX-BF16). Without them
    oneDNN emulates bf16, more slowly than float32: autocast would slow training and rendering
    down, not speed them up."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
