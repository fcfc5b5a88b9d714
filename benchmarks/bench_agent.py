"""RAVL agent speed: updates per second of eor's learner against the plain autograd reference.

Both sides do one whole update per call, batch sampling included:

* ref: `eor.ref.sample_mixed_ref` (numpy `Generator.choice` without replacement per buffer,
  gather, concatenate: the reference's own way) + `eor.ref.RAVLRef.update` (CORL-style critics
  fed an input repeated per critic, autograd double backward for the diversity term,
  q_random_std and `.item()` on every update);
* eor: `eor.sample_mixed` from two `eor.ReplayBuffer`s + `eor.agent.RAVL.update`.

The two run interleaved so that machine noise (a shared CPU) hits both alike: in each round
each side runs a block of back-to-back updates (10 at N = 10, 5 at N = 50), as a training loop
runs them, and a sample is the block's time per update. Also reported (`cold_ms`,
`cold_vs_ref`, `cold_cache_speedups`): one update per side in turn, each starting with the
other's data in the caches, a state no training loop is in.
Defaults: halfcheetah dims (S 17, A 6), batch 256 (12 real + 244 model), hidden 256, η 1,
N ∈ {10, 50}. Also reported: the machine's matmul ceiling (a large float32 GEMM, measured in the
same run), the FLOPs an update needs (analytic count of its GEMM work) and the fraction of the
ceiling each side achieves, and one rollout phase and one evaluation phase of the training loop.

    python benchmarks/bench_agent.py [--quick]
    python benchmarks/bench_agent.py --device cuda [--quick]   # writes results/gpu/agent.json

With `--device cuda` (exit 77 when no CUDA device is visible) both learners, their batches and
the rollout phase live on the GPU; eor's updates skip the per-update finite check as
`eor train-agent` does on CUDA (`check_finite=False`), and each timed block ends with a
`torch.cuda.synchronize()`. The 1-thread CPU-time and cold-cache variants are CPU measures and
are left out there. The rollout phase is timed twice (the first call compiles the kernels).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eor  # noqa: E402
from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    parse_args,
    print_table,
    timeit,
    write_results,
)
from eor.agent import RAVL, RAVLConfig  # noqa: E402
from eor.ref import ActorRef, RAVLRef, VectorizedCriticRef, sample_mixed_ref  # noqa: E402

S, A, B, H = 17, 6, 256, 256
REAL, MODEL = 12, 244  # int(0.05 · 256) real, the rest model


def matmul_gflops(n: int = 2048, repeats: int = 5, device: torch.device | None = None) -> float:
    """The machine's float32 GEMM rate (GFLOP/s, best of `repeats`), in this process."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    stats = timeit(lambda: a @ b, repeats=repeats, warmup=2, sync=_sync(device))
    return 2 * n**3 / stats["min_s"] / 1e9


def update_flops(n: int, b: int = B, s: int = S, a: int = A, h: int = H) -> float:
    """GEMM FLOPs one RAVL update needs (the work any implementation must do).

    A critic "pass" (one B-row GEMM through every layer of all N critics) costs
    P = 2·B·N·((S+A)·H + 2H² + H); an actor pass Pa = 2·B·(S·H + 2H² + 2·H·A). An update needs:
    target forward (P); actor step forward (P) and ∇ₐ minᵢ Qᵢ, a backward through one critic
    per row (P/N); critic forward, the shared δ chain (∂Q/∂x, used by TD and diversity), the
    diversity's second-order chain and one weight-gradient GEMM per layer (4P); the actor:
    α-step forward, actor forward + backward (input and weight gradients), target-action
    forward (5 Pa). Both sides are rated on this count (useful work per second).
    """
    p = 2 * b * n * ((s + a) * h + 2 * h * h + h)
    pa = 2 * b * (s * h + 2 * h * h + 2 * h * a)
    return 6 * p + p / n + 5 * pa


def synthetic_arrays(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "obs": rng.standard_normal((n, S), dtype=np.float32),
        "act": rng.uniform(-1, 1, (n, A)).astype(np.float32),
        "rew": rng.standard_normal(n, dtype=np.float32),
        "next_obs": rng.standard_normal((n, S), dtype=np.float32),
        "done": (rng.random(n) < 0.01).astype(np.float32),
    }


def _sync(device: torch.device | None) -> Any:
    """torch.cuda.synchronize on CUDA (timing must wait for the queued kernels), else None."""
    return torch.cuda.synchronize if device is not None and device.type == "cuda" else None


def reference_like(learner: RAVL) -> RAVLRef:
    """The reference learner with the same initial weights, on the learner's device."""
    c = learner.config
    actor = ActorRef(c.obs_dim, c.act_dim, c.hidden_dim, c.max_action)
    actor.load_state_dict(learner.actor.state_dict())
    critic = VectorizedCriticRef(c.obs_dim, c.act_dim, c.hidden_dim, c.num_critics)
    critic.load_stacked(*learner.critic.params(detach=True))
    actor.to(learner.device)  # before RAVLRef, which makes log α on the actor's device
    critic.to(learner.device)
    return RAVLRef(actor, critic, gamma=c.gamma, tau=c.tau, eta=c.eta)


def interleaved(
    fns: dict[str, Any],
    rounds: int,
    warmup: int,
    *,
    block: int = 1,
    single_thread: bool = False,
    sync: Any = None,
) -> dict[str, dict[str, float]]:
    """Time each fn over `block` back-to-back calls per round, the fns alternating round by
    round, after `warmup` calls each; a sample is the block's time / block (time per call).

    block > 1 measures what a training loop sees, one update straight after another of the
    same learner; block = 1 measures each call right after the other fn ran, so every call
    starts with the other's data in the caches (a cold-cache time no training loop has).
    Default: wall time with torch's usual threads (the result). single_thread: one torch
    thread and that thread's CPU time, which other jobs on a shared machine barely disturb
    (wall time and all-thread CPU time both swell under load, the latter with OpenMP spinning).
    sync: called before each clock read (torch.cuda.synchronize on CUDA).
    """
    threads = torch.get_num_threads()
    clock = time.thread_time if single_thread else time.perf_counter
    if single_thread:
        torch.set_num_threads(1)
    try:
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                if sync:
                    sync()
                c0 = clock()
                for _ in range(block):
                    fn()
                if sync:
                    sync()
                times[name].append((clock() - c0) / block)
    finally:
        torch.set_num_threads(threads)
    out = {}
    for name, ts in times.items():
        ts = sorted(ts)
        out[name] = {
            "median_s": float(np.median(ts)),
            "min_s": ts[0],
            "max_s": ts[-1],
            "spread_s": ts[(3 * len(ts)) // 4] - ts[len(ts) // 4],
            "repeats": len(ts),
        }
    return out


def bench_updates(
    n: int,
    real: dict[str, np.ndarray],
    model: dict[str, np.ndarray],
    rounds: int,
    ceiling: float,
    warmup: int,
    block: int,
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    cuda = device is not None and device.type == "cuda"
    config = RAVLConfig(obs_dim=S, act_dim=A, hidden_dim=H, num_critics=n, eta=1.0)
    learner = RAVL(config, seed=0, device=device or "cpu")
    ref = reference_like(learner)
    real_buf = eor.ReplayBuffer.from_arrays(**real, seed=1)
    model_buf = eor.ReplayBuffer.from_arrays(**model, seed=2)
    rng = np.random.default_rng(0)

    def eor_update() -> None:
        # On CUDA as eor train-agent runs it: no host sync per update.
        learner.update(
            eor.sample_mixed([real_buf, model_buf], [REAL, MODEL]), check_finite=not cuda
        )

    def ref_update() -> None:
        ref.update(sample_mixed_ref([real, model], [REAL, MODEL], rng, device=learner.device))

    fns = {"ref": ref_update, "eor": eor_update}
    stats = interleaved(fns, rounds=rounds, warmup=warmup, block=block, sync=_sync(device))
    if cuda:
        learner.raise_if_nonfinite()
        return _update_rows(n, stats, ceiling, block, None, None)
    cold = interleaved(fns, rounds=max(3, rounds // 2), warmup=0, block=1)
    single = interleaved(fns, rounds=max(3, rounds // 3), warmup=1, block=block, single_thread=True)
    return _update_rows(n, stats, ceiling, block, single, cold)


def _update_rows(
    n: int,
    stats: dict[str, dict[str, float]],
    ceiling: float,
    block: int,
    single: dict[str, dict[str, float]] | None,
    cold: dict[str, dict[str, float]] | None,
) -> list[dict[str, Any]]:
    """The ref and eor rows of one N (single, cold: the CPU-only variants, None on CUDA)."""
    flops = update_flops(n)
    rows = []
    for impl in ("ref", "eor"):
        st = stats[impl]
        ups = 1.0 / st["median_s"]
        row = {
            "case": f"update N={n}",
            "impl": impl,
            "median_ms": 1e3 * st["median_s"],
            "spread_ms": 1e3 * st["spread_s"],
            "min_ms": 1e3 * st["min_s"],
            "updates_per_s": ups,
            "gflop_per_update": flops / 1e9,
            "gflops": flops * ups / 1e9,
            "ceiling_frac": flops * ups / 1e9 / ceiling,
        }
        if single is not None and cold is not None:
            row["cpu1_ms"] = 1e3 * single[impl]["median_s"]
            row["cold_ms"] = 1e3 * cold[impl]["median_s"]
        row.update(repeats=st["repeats"], block=block)
        rows.append(row)
    rows[1]["vs_ref"] = stats["ref"]["median_s"] / stats["eor"]["median_s"]
    if single is not None and cold is not None:
        rows[1]["cpu1_vs_ref"] = single["ref"]["median_s"] / single["eor"]["median_s"]
        rows[1]["cold_vs_ref"] = cold["ref"]["median_s"] / cold["eor"]["median_s"]
    return rows


def bench_phases(
    quick: bool, real: dict[str, np.ndarray], device: torch.device | None = None
) -> tuple[list[dict[str, Any]], str]:
    """One rollout phase and one evaluation phase of the training loop (eor.agent); on CUDA
    the rollout phase twice (the first compiles the kernels) and no evaluation phase when the
    simulator cannot be made (its error in the note)."""
    device = device or torch.device("cpu")
    try:
        from eor.agent.evaluate import evaluate
        from eor.agent.rollout import rollout_phase
        from eor.dynamics import DynamicsEnsemble
        from eor.envs import get_env, make_env
    except ImportError as exc:  # a part of eor that is not there yet
        return [], f"phases not timed: {exc}"
    spec = get_env("halfcheetah")
    learner = RAVL(RAVLConfig(obs_dim=S, act_dim=A), seed=0, device=device)
    model = DynamicsEnsemble(
        S, A, env_name="halfcheetah", generator=torch.Generator().manual_seed(0)
    ).to(device)
    rollouts, k = (2_000, 5) if quick else (50_000, 5)
    real_buf = eor.ReplayBuffer.from_arrays(**real, seed=3)
    rows = []
    model_buf = eor.ReplayBuffer(rollouts * k, S, A, seed=4)
    generator = torch.Generator(device=device).manual_seed(0)
    for call in range(2 if device.type == "cuda" else 1):
        t0 = time.perf_counter()
        stats = rollout_phase(
            learner.actor,
            model,
            real_buf,
            model_buf,
            num_rollouts=rollouts,
            steps_k=k,
            generator=generator,
            device=device,
        )
        row = {
            "case": f"rollout phase ({rollouts} x {k}, untrained 7-member model)",
            "impl": "eor",
            "median_ms": 1e3 * (time.perf_counter() - t0),
            "transitions": stats.transitions_added,
            "repeats": 1,
        }
        if device.type == "cuda":
            row["case"] += " first call" if call == 0 else " second call"
        rows.append(row)
    episodes, max_steps = (10, 50) if quick else (10, None)
    t0 = time.perf_counter()
    try:
        envs = [make_env(spec) for _ in range(episodes)]  # made once per run by the trainer
    except ImportError as exc:  # no simulator here (gymnasium or mujoco missing)
        return rows, f"eval phase not timed: {type(exc).__name__}: {exc}"
    rows.append(
        {
            "case": f"make {episodes} eval envs (once per run)",
            "impl": "eor",
            "median_ms": 1e3 * (time.perf_counter() - t0),
            "repeats": 1,
        }
    )
    t0 = time.perf_counter()
    result = evaluate(
        learner.actor,
        spec,
        episodes=episodes,
        seed=0,
        device=device,
        max_steps=max_steps,
        envs=envs,
    )
    for env in envs:
        env.close()
    rows.append(
        {
            "case": f"eval phase ({episodes} episodes x {int(result['length_mean'])} steps)",
            "impl": "eor",
            "median_ms": 1e3 * (time.perf_counter() - t0),
            "repeats": 1,
        }
    )
    return rows, ""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv, device=True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    rounds = {10: 4, 50: 2} if args.quick else {10: 20, 50: 8}
    block = {10: 3, 50: 2} if args.quick else {10: 10, 50: 5}
    rng = np.random.default_rng(0)
    real = synthetic_arrays(20_000 if args.quick else 200_000, rng)
    model = synthetic_arrays(50_000 if args.quick else 250_000, rng)
    ceiling = matmul_gflops(4096 if cuda else 2048, device=device)
    where = torch.cuda.get_device_name(0) if cuda else f"{torch.get_num_threads()} threads"
    print(f"matmul ceiling: {ceiling:.1f} GFLOP/s ({4096 if cuda else 2048}² float32, {where})")
    rows: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    cpu_speedups: dict[str, float] = {}
    cold_speedups: dict[str, float] = {}
    for n in (10, 50):
        update_rows = bench_updates(
            n, real, model, rounds[n], ceiling, 1 if args.quick else 3, block[n], device
        )
        rows += update_rows
        speedups[f"update_n{n}_vs_ref"] = update_rows[1]["vs_ref"]
        if not cuda:
            cpu_speedups[f"update_n{n}_vs_ref"] = update_rows[1]["cpu1_vs_ref"]
            cold_speedups[f"update_n{n}_vs_ref"] = update_rows[1]["cold_vs_ref"]
    phase_rows, note = bench_phases(args.quick, real, device)
    rows += phase_rows
    if note:
        print(note)
    print_table(
        rows,
        [
            "case",
            "impl",
            "median_ms",
            "spread_ms",
            "updates_per_s",
            "gflops",
            "ceiling_frac",
            "vs_ref",
            "cpu1_ms",
            "cpu1_vs_ref",
            "cold_ms",
            "cold_vs_ref",
        ],
    )
    extra: dict[str, Any] = {"matmul_ceiling_gflops": ceiling}
    if not cuda:
        extra["single_thread_cpu_speedups"] = {k: round(v, 3) for k, v in cpu_speedups.items()}
        extra["cold_cache_speedups"] = {k: round(v, 3) for k, v in cold_speedups.items()}
    extra |= {
        "quick": bool(args.quick),
        "config": {
            "S": S,
            "A": A,
            "batch": B,
            "hidden": H,
            "eta": 1.0,
            "real": REAL,
            "model": MODEL,
        },
        "ops_backends": eor.ops.backend_report(device),
    }
    if cuda:
        extra["device"] = str(device)
    if note:
        extra["phases_note"] = note
    out = args.out or (RESULTS_DIR / "gpu" / "agent.json" if cuda else None)
    path = write_results("agent", rows, speedups, out=out, extra=extra)
    print(
        f"speedups (wall): {speedups}\nspeedups (1-thread CPU time): {cpu_speedups}\n"
        f"speedups (cold cache, one call per side in turn): {cold_speedups}\nwrote {path}"
    )


if __name__ == "__main__":
    main()
