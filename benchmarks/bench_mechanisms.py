"""What each page-fault-avoiding mechanism pays end to end, with `eor.runtime.tune_malloc` on.

eor keeps a few caches on its CPU hot paths so that big intermediates are not freed and
page-faulted in again every step. The rule (DEVELOPERS.md): a mechanism on a hot path stays only
while it pays at least 5% end to end, measured on what a real command repeats. This benchmark
times, in one process, each unit of real work with everything on and with one mechanism off,
the two alternating block by block; speedup = time with the mechanism off / time with it on.

  workspace_scratch_n{10,50}: `eor.workspace.scratch` (EOR_WORKSPACE_MB=0 turns it off), on a
      whole RAVL update (mixed batch + learner.update; halfcheetah dims, batch 256, N critics);
  grad_out_buffers_n{10,50}: the learner's critic gradients written into kept buffers
      (`ops.critic_loss_grads(..., out=...)`; off: fresh gradient tensors each update);
  closed_form_step: `eor.dynamics.step.ClosedFormStep` (off: autograd's backward of the same
      loss), on a dynamics training epoch (`DynamicsTrainer.train_epoch`, 7 members);
  batch_buffers: the dynamics trainer's kept minibatch buffers (off: a fresh gather per step).

tune_malloc (glibc keeps freed memory in the process) is applied first, as `eor train-model`
and `eor train-agent` do: each cache must pay on top of it.

    python benchmarks/bench_mechanisms.py [--quick]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eor  # noqa: E402
from benchmarks.bench_agent import MODEL, REAL, A, S, interleaved, synthetic_arrays  # noqa: E402
from benchmarks.common import parse_args, print_table, write_results  # noqa: E402
from eor import workspace  # noqa: E402
from eor.agent import RAVL, RAVLConfig  # noqa: E402
from eor.dynamics import DynamicsConfig, DynamicsTrainer  # noqa: E402
from eor.runtime import tune_malloc  # noqa: E402


def _row(case: str, stats: dict[str, dict[str, float]]) -> dict[str, Any]:
    on, off = stats["on"]["median_s"], stats["off"]["median_s"]
    return {
        "case": case,
        "on_ms": 1e3 * on,
        "off_ms": 1e3 * off,
        "on_spread_ms": 1e3 * stats["on"]["spread_s"],
        "off_spread_ms": 1e3 * stats["off"]["spread_s"],
        "gain": off / on,
    }


def bench_agent_mechanisms(n: int, rounds: int, block: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    real = eor.ReplayBuffer.from_arrays(**synthetic_arrays(20_000, rng), seed=1)
    model = eor.ReplayBuffer.from_arrays(**synthetic_arrays(50_000, rng), seed=2)
    learner = RAVL(RAVLConfig(obs_dim=S, act_dim=A, num_critics=n, eta=1.0), seed=0)
    kept_grads = learner._critic_grad_buffers

    def update() -> None:
        learner.update(eor.sample_mixed([real, model], [REAL, MODEL]))

    def scratch_off() -> None:
        os.environ["EOR_WORKSPACE_MB"] = "0"
        workspace.clear()
        try:
            update()
        finally:
            del os.environ["EOR_WORKSPACE_MB"]

    def grad_out_off() -> None:
        learner._critic_grad_buffers = None
        try:
            update()
        finally:
            learner._critic_grad_buffers = kept_grads

    rows = []
    for case, off in (("workspace_scratch", scratch_off), ("grad_out_buffers", grad_out_off)):
        stats = interleaved({"on": update, "off": off}, rounds=rounds, warmup=2, block=block)
        rows.append(_row(f"{case}_n{n}", stats))
    return rows


def bench_dynamics_mechanisms(n_rows: int, rounds: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n_rows, S), dtype=np.float32)
    act = rng.uniform(-1, 1, (n_rows, A)).astype(np.float32)
    rew = rng.standard_normal(n_rows, dtype=np.float32)
    nxt = obs + 0.1 * rng.standard_normal((n_rows, S), dtype=np.float32)
    trainer = DynamicsTrainer(
        DynamicsConfig(env_name="halfcheetah-random-v2", seed=0), obs, act, rew, nxt,
        env_name="halfcheetah",
    )  # fmt: skip
    closed_form, kept_batch = trainer.closed_form, trainer._batch

    def epoch() -> None:
        trainer.train_epoch()

    def closed_form_off() -> None:
        trainer.closed_form = None
        try:
            epoch()
        finally:
            trainer.closed_form = closed_form

    def fresh_batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e, b = idx.shape
        flat = idx.reshape(-1)
        x = torch.index_select(trainer.train_x, 0, flat).view(e, b, -1)
        return x, torch.index_select(trainer.train_y, 0, flat).view(e, b, -1)

    def batch_buffers_off() -> None:
        trainer._batch = fresh_batch  # type: ignore[method-assign]
        try:
            epoch()
        finally:
            trainer._batch = kept_batch  # type: ignore[method-assign]

    rows = []
    for case, off in (("closed_form_step", closed_form_off), ("batch_buffers", batch_buffers_off)):
        stats = interleaved({"on": epoch, "off": off}, rounds=rounds, warmup=1)
        rows.append(_row(case, stats))
    return rows


def main() -> None:
    args = parse_args(__doc__ or "")
    tuned = tune_malloc()
    quick = args.quick
    rows = bench_agent_mechanisms(10, rounds=4 if quick else 12, block=5 if quick else 10)
    rows += bench_agent_mechanisms(50, rounds=2 if quick else 6, block=2 if quick else 5)
    rows += bench_dynamics_mechanisms(5_000 if quick else 50_000, rounds=3 if quick else 7)
    print_table(rows, ["case", "on_ms", "off_ms", "on_spread_ms", "off_spread_ms", "gain"])
    print(f"tune_malloc applied: {tuned}")
    speedups = {r["case"]: r["gain"] for r in rows}
    path = write_results(
        "mechanisms", rows, speedups, out=args.out, extra={"malloc_tuned": bool(tuned)}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
