"""Test helpers shared by the ops tests (OPSA owns; others may import)."""

from __future__ import annotations

import torch
from torch import Tensor

# (rtol, atol) per dtype: a few ulps of the accumulated sums at these small widths.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


def tolerances(dtype: torch.dtype, scale: float = 1.0) -> tuple[float, float]:
    """(rtol, atol) for comparing results computed in `dtype`, times `scale`."""
    rtol, atol = _TOLERANCES[dtype]
    return rtol * scale, atol * scale


def assert_close_verbose(
    actual: Tensor,
    expected: Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    scale: float = 1.0,
    name: str = "tensor",
    max_print: int = 5,
) -> None:
    """allclose that says where and how it failed (Liger's assert_verbose_allclose).

    Fails on shape mismatch, on NaN/inf in `actual` where `expected` is finite, and on
    |actual − expected| > atol + rtol·|expected|; the message gives the count of bad
    elements and the worst indices with both values. Tolerances default from the dtype.
    """
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
        )
    d_rtol, d_atol = tolerances(expected.dtype, scale)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    bad_nonfinite = ~torch.isfinite(a) & torch.isfinite(e)
    if bool(bad_nonfinite.any()):
        idx = bad_nonfinite.nonzero()[:max_print].tolist()
        raise AssertionError(
            f"{name}: {int(bad_nonfinite.sum())} NaN/inf values where the reference is finite, "
            f"first at {idx}"
        )
    nonfinite_mismatch = ~torch.isfinite(e) & ~((a == e) | (torch.isnan(a) & torch.isnan(e)))
    err = (a - e).abs()
    err = torch.where(torch.isfinite(e), err, torch.zeros_like(err))
    bad = (err > atol + rtol * e.abs()) | nonfinite_mismatch
    if bool(bad.any()):
        excess = (err - rtol * e.abs()).flatten()
        worst = torch.topk(excess, min(max_print, int(bad.sum()))).indices
        lines = []
        for flat in worst.tolist():
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
            lines.append(
                f"  at {index}: actual {a[index].item():.8g}, expected "
                f"{e[index].item():.8g}, |diff| {err[index].item():.3g}"
            )
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{a.numel()} elements differ beyond atol={atol:g}, "
            f"rtol={rtol:g}; max |diff| {err.max().item():.3g}; worst:\n" + "\n".join(lines)
        )
