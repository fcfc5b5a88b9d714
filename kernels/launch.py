"""Every kernel launch of this package goes through `launch`, and every choice a launcher makes
(tile sizes, `num_warps`, `num_stages`, dot precision) is a function of this module.

Why one place: `eor.kernels.compile_check` must compile exactly what the launchers launch. It
runs the real launchers on CPU tensors of realistic shapes inside `recording()`, where `launch`
records the kernel, its argument types, constexprs, grid, warps and stages instead of running
it; then it compiles each recorded launch for sm_80 and sm_90. A launcher that changes a tile
or adds a constexpr is therefore checked as it is, with no list to keep in step.

Precision policy (docs/gpu.md, "Numerics"): `dot_precision`.

- `ensemble_linear` and `ensemble_mlp` (dynamics training and rollouts, actor and critic
  forwards) do what `torch.matmul` does for the same float32 product: IEEE float32 (CUDA-core
  FMA) by default, TF32 tensor cores when the user allows TF32 for matmuls
  (`torch.backends.cuda.matmul.allow_tf32 = True`, or `torch.set_float32_matmul_precision("high")`),
  about 1e-3 relative error.
- `diversity` (the critic loss's GEMM chain and the diversity rows): always IEEE. The
  diversity gradient is built from the action gradients v = ∇ₐQᵢ through a normalisation
  v/‖v‖ whose backward divides by ‖v‖: a TF32 rounding of v is amplified where ‖v‖ is small,
  and the critic GEMMs are small (batch 256), so tensor cores would buy little.

This module does not import triton: it is plain Python, importable anywhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# Triton's defaults; named here so that a launcher that passes nothing is recorded as launched.
DEFAULT_NUM_WARPS = 4
DEFAULT_NUM_STAGES = 3

PRECISION_FAMILIES = ("ensemble_linear", "ensemble_mlp", "diversity")


def dot_precision(family: str, dtype: torch.dtype) -> str:
    """The `input_precision` of every `tl.dot` of a kernel family (module docstring)."""
    if family not in PRECISION_FAMILIES:
        raise ValueError(f"family must be one of {PRECISION_FAMILIES}, got {family!r}")
    if family == "diversity" or dtype != torch.float32:
        return "ieee"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def pow2_block(n: int, lo: int = 16, hi: int = 64) -> int:
    """The power of two covering n, within [lo, hi] (`tl.dot` needs every side ≥ 16)."""
    p = 1
    while p < max(int(n), 1):
        p *= 2
    return max(lo, min(hi, p))


@dataclass(frozen=True)
class GemmTiling:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def gemm_tiling(m: int, n: int, k: int, precision: str, *, outer_loop: bool = False) -> GemmTiling:
    """The tiles, warps and pipeline stages of a GEMM tile loop over `[m, k] @ [k, n]`.

    Chosen by the compile check (no spills on sm_80 and sm_90; each alternative named here
    spilled somewhere): an IEEE (FMA) dot holds each thread's rows of both operands over the
    whole BLOCK_K in registers, so it takes BLOCK_K = 16 (not 32); a 64 x 64 tile takes 8 warps
    (not 4); 2 pipeline stages (not Triton's default 3, which spilled), and 1 when the k-loop
    sits inside another loop (`outer_loop`: the shared-input backward's sum over members, which
    spilled on sm_80 with 2).
    """
    block_m, block_n = pow2_block(m), pow2_block(n)
    block_k = pow2_block(k, 16, 16 if precision == "ieee" else 32)
    warps = 8 if block_m * block_n >= 64 * 64 else 4
    return GemmTiling(block_m, block_n, block_k, warps, 1 if outer_loop else 2)


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


@dataclass(frozen=True)
class RecordedLaunch:
    """One launch as `launch` saw it: enough to compile it ahead of time."""

    module: str  # "ensemble_linear" | "ensemble_mlp" | "diversity"
    kernel: str  # the jit function's name
    signature: tuple[tuple[str, str], ...]  # (argument, Triton type), constexprs excluded
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int
    grid: tuple[int, ...] = field(compare=False)
    where: str = field(default="", compare=False)  # the launcher and shape that launched it

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= g
        return n

    def config(self) -> str:
        """The constexprs that matter to a reader, as one short string."""
        parts = [f"{k}={v}" for k, v in self.constexprs]
        parts += [f"warps={self.num_warps}", f"stages={self.num_stages}"]
        return " ".join(parts)


_TRITON_DTYPES = {
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.bool: "i1",
}


def _arg_type(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _TRITON_DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type a kernel argument of type {type(value).__name__}")


class _Recorder(threading.local):
    launches: list[RecordedLaunch] | None = None
    where: str = ""


_RECORDER = _Recorder()


@contextlib.contextmanager
def recording(where: str = "") -> Iterator[list[RecordedLaunch]]:
    """Within the block, `launch` records instead of running; yields the list it fills."""
    previous, previous_where = _RECORDER.launches, _RECORDER.where
    _RECORDER.launches, _RECORDER.where = [], where
    try:
        yield _RECORDER.launches
    finally:
        _RECORDER.launches, _RECORDER.where = previous, previous_where


def launch(
    kernel: Any,
    grid: Sequence[int],
    args: Sequence[Any],
    constexprs: dict[str, Any],
    *,
    num_warps: int = DEFAULT_NUM_WARPS,
    num_stages: int = DEFAULT_NUM_STAGES,
) -> None:
    """`kernel[grid](*args, **constexprs, num_warps=..., num_stages=...)`, or, inside
    `recording()`, a `RecordedLaunch` appended to the recording."""
    grid = tuple(int(g) for g in grid)
    if _RECORDER.launches is None:
        kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
        return
    fn = getattr(kernel, "fn", kernel)
    names = [n for n in fn.__code__.co_varnames[: fn.__code__.co_argcount]]
    positional = [n for n in names if n not in constexprs]
    if len(positional) != len(args):
        raise TypeError(
            f"{fn.__name__}: {len(args)} arguments for {len(positional)} non-constexpr parameters"
        )
    _RECORDER.launches.append(
        RecordedLaunch(
            module=fn.__module__.rsplit(".", 1)[-1],
            kernel=fn.__name__,
            signature=tuple((n, _arg_type(a)) for n, a in zip(positional, args, strict=True)),
            constexprs=tuple(constexprs.items()),
            num_warps=num_warps,
            num_stages=num_stages,
            grid=grid,
            where=_RECORDER.where,
        )
    )
