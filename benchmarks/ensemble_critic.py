"""Critic-update benchmark (issue 3, op 3): eor's closed-form critic loss against the autograd
double-backward reference `eor.ref.critic_loss_ref`, forward + backward, on this machine.

Imported by `bench_ensemble.py` (which merges `run()` into results/ensemble.json); also runnable
alone: `python benchmarks/ensemble_critic.py [--quick]` writes results/ensemble_critic.json.

Cases (batch 256, hidden 256, halfcheetah S=17, A=6, docs/algorithm.md §3 init, eta = 1):
- critic_update_n10 / _n50: L = Σ_i mean_b (Q_i − y)² + η·L_div and every weight/bias gradient;
- diversity_n10: L_div alone, value and gradient (`eor.ops.diversity_loss` against
  `eor.ref.diversity_loss_ref`).
Providers are timed in alternating rounds in one process, so that load from other processes
hits both alike; the reported median is over all rounds.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `eor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import parse_args, print_table, timeit, write_results  # noqa: E402
from eor import ops, ref  # noqa: E402

OBS_DIM, ACT_DIM, HIDDEN, BATCH = 17, 6, 256, 256


def _critics(n: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """docs/algorithm.md §3 critic init: U(±1/√fan_in) weights, biases 0.1, last layer U(±3e-3)."""
    gen = torch.Generator().manual_seed(seed)
    dims = [OBS_DIM + ACT_DIM, HIDDEN, HIDDEN, HIDDEN, 1]
    weights, biases = [], []
    for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        bound = 3e-3 if layer == 3 else 1.0 / math.sqrt(fan_in)
        w = (torch.rand(n, fan_in, fan_out, generator=gen) * 2 - 1) * bound
        if layer == 3:
            b = (torch.rand(n, fan_out, generator=gen) * 2 - 1) * bound
        else:
            b = torch.full((n, fan_out), 0.1)
        weights.append(w.requires_grad_(True))
        biases.append(b.requires_grad_(True))
    return weights, biases


def _flops(n: int, with_td: bool) -> float:
    """Multiply-adds ×2 of the closed-form path (see eor.ops.critic_closed_form): forward, δ chain, v,
    the e chain and the weight-gradient GEMMs."""
    d, h, a, b = OBS_DIM + ACT_DIM, HIDDEN, ACT_DIM, BATCH
    per = d * h + 2 * h * h + h  # forward
    per += 2 * h * h + a * h  # δ chain and v
    per += a * h + h * h  # e1, e2
    per += 2 * h * h + (d if with_td else a) * h  # dW1, dW2, M (dW3, dw4)
    return 2.0 * n * b * per


def _interleaved(fns: dict[str, Callable[[], Any]], rounds: int, repeats: int) -> dict[str, dict]:
    """Time each fn in `rounds` alternating rounds of `repeats` calls; pool the round medians."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm up every provider first
        timeit(fn, repeats=1, warmup=2)
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(timeit(fn, repeats=repeats, warmup=0)["median_s"])
    out = {}
    for k, xs in samples.items():
        xs.sort()
        out[k] = {
            "median_s": statistics.median(xs),
            "spread_s": xs[(3 * len(xs)) // 4] - xs[len(xs) // 4],
            "min_s": xs[0],
        }
    return out


def _providers(
    n: int, with_td: bool, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor, eta: float
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(reference, eor) closures: forward + backward of the loss, gradients reset each call."""
    weights, biases = _critics(n)
    params = weights + biases

    def zero() -> None:
        for p in params:
            p.grad = None

    def reference() -> None:
        zero()
        if with_td:
            ref.critic_loss_ref(obs, act, target, weights, biases, eta).backward()
        else:
            ref.diversity_loss_ref(obs, act, weights, biases).backward()

    def fused() -> None:
        zero()
        if with_td:
            ops.critic_loss(obs, act, target, weights, biases, eta).loss.backward()
        else:
            ops.diversity_loss(obs, act, weights, biases).backward()

    return reference, fused


def run(quick: bool = False) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Time the cases; return (rows, speedups) with speedup = reference median / eor median."""
    torch.manual_seed(0)
    obs = torch.randn(BATCH, OBS_DIM)
    act = torch.rand(BATCH, ACT_DIM) * 2 - 1
    target = torch.randn(BATCH)
    eta = 1.0
    rows: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    cases = [("critic_update_n10", 10, True), ("critic_update_n50", 50, True)]
    cases.append(("diversity_n10", 10, False))
    for key, n, with_td in cases:
        reference, fused = _providers(n, with_td, obs, act, target, eta)
        big = n >= 50
        rounds = (3 if big else 5) if quick else (6 if big else 12)
        repeats = 2 if quick else 3
        t = _interleaved({"ref": reference, "eor": fused}, rounds, repeats)
        speedup = t["ref"]["median_s"] / t["eor"]["median_s"]
        speedups[key] = speedup
        flops = _flops(n, with_td)
        for provider in ("ref", "eor"):
            rows.append(
                {
                    "case": key,
                    "num_critics": n,
                    "batch": BATCH,
                    "hidden": HIDDEN,
                    "provider": provider,
                    "median_ms": 1e3 * t[provider]["median_s"],
                    "spread_ms": 1e3 * t[provider]["spread_s"],
                    "gflops": flops / t[provider]["median_s"] / 1e9 if provider == "eor" else None,
                    "speedup": speedup if provider == "eor" else 1.0,
                }
            )
    return rows, speedups


COLUMNS = ["case", "provider", "median_ms", "spread_ms", "gflops", "speedup"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args("eor critic update vs the autograd double-backward reference", argv)
    rows, speedups = run(quick=args.quick)
    print_table(rows, COLUMNS)
    print("speedups (ref median / eor median):", {k: round(v, 2) for k, v in speedups.items()})
    print("(timings are noisy on a shared machine; GFLOP/s counts the closed-form path's flops)")
    path = write_results("ensemble_critic", rows, speedups, out=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
