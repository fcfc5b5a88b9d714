"""Dynamics ensemble: quality and speed against the per-member-loop reference (eor.ref).

On a halfcheetah-random dataset collected with `eor collect` (200k steps; 5k with --quick):
  - quality: eor's trainer and `eor.ref.fit_dynamics_ref` (a Python loop over 7 nn.Module MLPs)
    train for the same epochs from the same init on the same split, bootstrap and batch order
    (their epochs alternate, so both see the same machine load);
    holdout MSE of both (ratio eor / ref), and one-step and 5-step rollout error of both models
    against the real simulator, started from held-out dataset states;
  - epoch time: median seconds per epoch (one pass over the bootstrap + holdout evaluation);
  - rollout phase: 50,000 starts x 5 steps with random actions (5,000 with --quick):
    eor's gathered step (only the chosen elite's row) against the reference step (every member
    predicts and samples, then one elite per row is picked).

Writes benchmarks/results/dynamics.json with speedups epoch_vs_ref and rollout_vs_ref and
quality.holdout_mse_ratio.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parse_args, print_table, timeit, write_results  # noqa: E402
from eor import ref  # noqa: E402
from eor.data import collect, load_dataset  # noqa: E402
from eor.dynamics import DynamicsConfig, DynamicsEnsemble, DynamicsTrainer  # noqa: E402
from eor.envs import get_env, make_env  # noqa: E402


def dataset_file(steps: int, seed: int = 0) -> Path:
    out = Path(tempfile.gettempdir()) / f"eor_bench_halfcheetah_random_{steps}_s{seed}.hdf5"
    if not out.is_file():
        collect("halfcheetah-random-v2", steps=steps, seed=seed, out=out, progress=False)
    return out


def reference_like(trainer: DynamicsTrainer) -> ref.DynamicsEnsembleRef:
    """A reference ensemble holding the trainer's current weights (before training: its init)."""
    m = trainer.model
    r = ref.DynamicsEnsembleRef(m.obs_dim, m.act_dim, m.num_members, m.num_elites, m.hidden_dim)
    r.load_stacked([w.detach() for w in m.weights], [b.detach() for b in m.biases])
    with torch.no_grad():
        r.max_logvar.copy_(m.max_logvar)
        r.min_logvar.copy_(m.min_logvar)
        r.input_mean.copy_(m.normalizer.mean)
        r.input_std.copy_(m.normalizer.std)
    return r


def rollout_error(
    step_fn: Any, ds: Any, holdout_idx: np.ndarray, n_starts: int, horizon: int = 5, seed: int = 0
) -> dict[str, list[float]]:
    """MSE (over starts and obs dims) and reward MSE per horizon: model rollout vs simulator.

    HalfCheetah's observation is qpos[1:] (8) + qvel (9); the x position does not affect the
    dynamics, so the simulator is set to qpos = [0, obs[:8]], qvel = obs[8:].
    """
    rng = np.random.default_rng(seed)
    starts = ds.observations[rng.choice(holdout_idx, size=n_starts, replace=False)]
    actions = rng.uniform(-1.0, 1.0, size=(horizon, n_starts, 6)).astype(np.float32)
    env = make_env("halfcheetah", seed=seed)
    env.reset(seed=seed)
    sim = env.unwrapped
    real_obs = np.zeros((horizon, n_starts, 17), np.float64)
    real_rew = np.zeros((horizon, n_starts), np.float64)
    for i in range(n_starts):
        env.reset()
        sim.set_state(np.concatenate([[0.0], starts[i, :8]]), starts[i, 8:])
        for h in range(horizon):
            obs, rew, *_ = env.step(actions[h, i])
            real_obs[h, i], real_rew[h, i] = obs, rew
    env.close()
    obs_t = torch.from_numpy(starts)
    gen = torch.Generator().manual_seed(seed)
    obs_err, rew_err = [], []
    for h in range(horizon):
        obs_t, rew_t = step_fn(obs_t, torch.from_numpy(actions[h]), gen)
        obs_err.append(float(((obs_t.double().numpy() - real_obs[h]) ** 2).mean()))
        rew_err.append(float(((rew_t.double().numpy() - real_rew[h]) ** 2).mean()))
    return {"obs_mse": obs_err, "reward_mse": rew_err}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    steps = 5_000 if args.quick else 200_000
    epochs = 2 if args.quick else 5
    n_rollout = 5_000 if args.quick else 50_000
    n_error = 100 if args.quick else 1000
    torch.manual_seed(0)

    t0 = time.perf_counter()
    ds = load_dataset(dataset_file(steps), env="halfcheetah")
    print(
        f"dataset: {len(ds)} transitions of {ds.name} ({time.perf_counter() - t0:.1f} s to collect/load)"
    )
    spec = get_env("halfcheetah")

    # -------------------------------------------------------------- quality and epoch time
    config = DynamicsConfig(env_name="halfcheetah-random-v2", epochs=epochs, min_epochs=epochs)
    trainer = DynamicsTrainer(
        config,
        ds.observations,
        ds.actions,
        ds.rewards,
        ds.next_observations,
        env_name="halfcheetah",
    )
    reference = reference_like(trainer)  # same init, normaliser, split and bootstrap
    shuffle_state = trainer.shuffle_gen.get_state()  # and the same batch order
    trainer.start()
    gen = torch.Generator()
    gen.set_state(shuffle_state)
    # Epochs alternate (ref, eor, ref, eor, ...) so that both see the same machine load.
    ref_mse, ref_times = ref.fit_dynamics_ref(
        reference,
        trainer.train_x,
        trainer.train_y,
        trainer.holdout_x,
        trainer.holdout_y,
        trainer.bootstrap,
        epochs=epochs,
        batch_size=config.batch_size,
        lr=config.model_lr,
        generator=gen,
        on_epoch=lambda _: trainer.run_epoch(),
    )
    eor_mse = trainer.finish()
    ref_elites = sorted(np.argsort(ref_mse)[: config.num_elites].tolist())
    reference.elites.copy_(torch.tensor(ref_elites))
    eor_elite_mse = float(np.mean([eor_mse[i] for i in trainer.model.elites.tolist()]))
    ref_elite_mse = float(np.mean([ref_mse[i] for i in ref_elites]))
    eor_epoch = float(np.median(trainer.epoch_times))
    ref_epoch = float(np.median(ref_times))

    # -------------------------------------------------------------- rollout error vs simulator
    model: DynamicsEnsemble = trainer.model.eval()
    holdout_idx = _holdout_indices(len(ds), config)

    def eor_step(o: torch.Tensor, a: torch.Tensor, g: torch.Generator) -> tuple:
        next_obs, rew, _ = model.step(o, a, g)
        return next_obs, rew

    def ref_step(o: torch.Tensor, a: torch.Tensor, g: torch.Generator) -> tuple:
        with torch.no_grad():
            next_obs, rew, _, _ = reference.step(o, a, g)
        return next_obs, rew

    print(f"trained {epochs} epochs each: eor {eor_epoch:.2f} s/epoch, ref {ref_epoch:.2f} s/epoch")
    err_eor = rollout_error(eor_step, ds, holdout_idx, n_error)
    err_ref = rollout_error(ref_step, ds, holdout_idx, n_error)

    # -------------------------------------------------------------- rollout throughput
    pick = np.random.default_rng(1).choice(len(ds), n_rollout, replace=n_rollout > len(ds))
    obs0 = torch.from_numpy(ds.observations[pick])

    def phase(step: Any) -> None:
        g = torch.Generator().manual_seed(0)
        obs = obs0
        for _ in range(5):
            act = torch.rand(n_rollout, spec.act_dim, generator=g) * 2 - 1
            obs = step(obs, act, g)

    def eor_phase_step(o: torch.Tensor, a: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        next_obs, _, done = model.step(o, a, g)
        return next_obs[~done]

    def ref_phase_step(o: torch.Tensor, a: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            next_obs, _, _, _ = reference.step(o, a, g)
        return next_obs[~spec.termination_fn(next_obs)]

    repeats = 3
    t_eor = timeit(lambda: phase(eor_phase_step), repeats=repeats, warmup=1)
    t_ref = timeit(lambda: phase(ref_phase_step), repeats=repeats, warmup=1)

    # -------------------------------------------------------------- report
    n_trans = 5 * n_rollout
    rows = [
        {
            "what": "epoch (s)",
            "provider": "ref",
            "median": ref_epoch,
            "spread": float(np.ptp(ref_times)),
            "n": epochs,
        },
        {
            "what": "epoch (s)",
            "provider": "eor",
            "median": eor_epoch,
            "spread": float(np.ptp(trainer.epoch_times)),
            "n": epochs,
        },
        {
            "what": f"rollout {n_rollout}x5 (s)",
            "provider": "ref",
            "median": t_ref["median_s"],
            "spread": t_ref["spread_s"],
            "n": repeats,
        },
        {
            "what": f"rollout {n_rollout}x5 (s)",
            "provider": "eor",
            "median": t_eor["median_s"],
            "spread": t_eor["spread_s"],
            "n": repeats,
        },
    ]
    print_table(rows, ["what", "provider", "median", "spread", "n"])
    speedups = {
        "epoch_vs_ref": ref_epoch / eor_epoch,
        "rollout_vs_ref": t_ref["median_s"] / t_eor["median_s"],
    }
    quality = {
        "holdout_mse_ratio": eor_elite_mse / ref_elite_mse,
        "holdout_mse_ratio_all_members": float(np.mean(eor_mse) / np.mean(ref_mse)),
        "eor_holdout_mse": eor_mse,
        "ref_holdout_mse": ref_mse,
        "eor_elites": trainer.model.elites.tolist(),
        "ref_elites": ref_elites,
        "epochs": epochs,
        "dataset_transitions": len(ds),
        "n_train": trainer.n_train,
        "n_holdout": trainer.n_holdout,
        "rollout_error_vs_simulator": {"starts": n_error, "eor": err_eor, "ref": err_ref},
    }
    print(
        f"holdout MSE (elites) eor {eor_elite_mse:.5g}, ref {ref_elite_mse:.5g}, ratio "
        f"{quality['holdout_mse_ratio']:.4f} (all members {quality['holdout_mse_ratio_all_members']:.4f})"
    )
    for name, err in (("eor", err_eor), ("ref", err_ref)):
        print(
            f"rollout obs MSE vs simulator, {name}, h=1..5: "
            + ", ".join(f"{v:.4g}" for v in err["obs_mse"])
            + " | reward MSE: "
            + ", ".join(f"{v:.4g}" for v in err["reward_mse"])
        )
    print(
        f"epoch_vs_ref {speedups['epoch_vs_ref']:.2f}x, rollout_vs_ref {speedups['rollout_vs_ref']:.2f}x; "
        f"rollout throughput eor {n_trans / t_eor['median_s']:.0f} transitions/s, "
        f"ref {n_trans / t_ref['median_s']:.0f} transitions/s"
    )
    extra = {
        "quality": quality,
        "config": {
            "quick": args.quick,
            "steps": steps,
            "epochs": epochs,
            "rollout_starts": n_rollout,
        },
        "throughput_transitions_per_s": {
            "eor": n_trans / t_eor["median_s"],
            "ref": n_trans / t_ref["median_s"],
        },
    }
    path = write_results("dynamics", rows, speedups, out=args.out, extra=extra)
    print(f"wrote {path}")


def _holdout_indices(n: int, config: DynamicsConfig) -> np.ndarray:
    from eor.dynamics.train import split_indices

    return split_indices(n, config.train_val_ratio, config.seed)[1].numpy()


if __name__ == "__main__":
    main()
