"""Bootstrap re-dealing (the reference's procedure) against one fixed resample per member.

On a halfcheetah-random dataset collected with `eor collect` (uniform random actions, seeded;
200k steps by default), two dynamics ensembles are trained from the same seed (same split,
init, resamples), one with `bootstrap="redeal"` and one with `bootstrap="fixed"`, under the
stopping rule of docs/algorithm.md §2 with the given `--min_epochs` and `--epochs` cap.
Reported per run:

  - holdout MSE per member and mean over the 5 elites (after restoring each member's best);
  - epochs run, why training stopped, the last epoch at which any member improved;
  - member disagreement along 5-step model rollouts: from `--starts` holdout states, actions
    uniform in [-1, 1] (the same for both runs), the state advanced by the model's own rollout
    step (one elite's Gaussian sample per row, as in RAVL's rollouts). At every step h = 1..5,
    each member's predicted next-observation mean (obs + μ_Δobs) at the current state is
    taken; disagreement(h) = mean over states and the 17 obs dims of the population std over
    the members (all 7, and the 5 elites);
  - rollout error against the simulator (MSE over obs dims, model samples as in rollouts).

Writes benchmarks/results/bootstrap.json (after each run, so a partial study keeps its rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_dynamics import dataset_file, rollout_error  # noqa: E402
from benchmarks.common import RESULTS_DIR, git_sha, machine_info  # noqa: E402
from eor.data import load_dataset  # noqa: E402
from eor.dynamics import DynamicsConfig, DynamicsEnsemble, DynamicsTrainer  # noqa: E402
from eor.dynamics.train import split_indices  # noqa: E402


@torch.no_grad()
def disagreement(
    model: DynamicsEnsemble, starts: np.ndarray, actions: np.ndarray, seed: int
) -> dict[str, list[float]]:
    """Per step h = 1..H: mean over states and obs dims of the std over members of the
    predicted next-obs mean (all members, and the elites), along the model's own rollout."""
    obs = torch.from_numpy(starts)
    gen = torch.Generator().manual_seed(seed)
    elites = model.elites.tolist()
    every, elite = [], []
    for h in range(actions.shape[0]):
        act = torch.from_numpy(actions[h])
        mean, _ = model.predict(obs, act)  # [E, B, D]: mean of [Δobs, reward]
        # next-obs mean = obs + μ_Δobs; obs is shared by the members, so the spread is μ's
        next_mean = mean[..., : model.obs_dim].double()
        every.append(float(next_mean.std(dim=0, unbiased=False).mean()))
        elite.append(float(next_mean[elites].std(dim=0, unbiased=False).mean()))
        obs, _, _ = model.step(obs, act, gen)
    return {"all_members": every, "elites": elite}


def train(config: DynamicsConfig, ds: Any) -> tuple[DynamicsTrainer, dict[str, Any]]:
    trainer = DynamicsTrainer(
        config,
        ds.observations,
        ds.actions,
        ds.rewards,
        ds.next_observations,
        env_name="halfcheetah",
    )
    start = trainer.start()
    t0 = time.perf_counter()
    history = [start["holdout_mse"]]
    while not trainer.done:
        row = trainer.run_epoch()
        history.append(row["holdout_mse"])
        if row["epoch"] % 5 == 0 or trainer.done:
            elite = np.mean(sorted(row["holdout_mse"])[: config.num_elites])
            print(
                f"  [{config.bootstrap}] epoch {row['epoch']}: holdout (5 best) {elite:.5f}, "
                f"lr {row['lr']:.1e}, {row['epoch_time']:.1f} s/epoch",
                flush=True,
            )
    final = trainer.finish()
    elites = trainer.model.elites.tolist()
    return trainer, {
        "bootstrap": config.bootstrap,
        "holdout_mse": final,
        "elites": elites,
        "elite_holdout_mse": float(np.mean([final[i] for i in elites])),
        "epochs": trainer.epoch,
        "stop_reason": trainer.stop_reason,
        "last_improvement_epoch": trainer.stopper.last_improvement(),
        "train_seconds": time.perf_counter() - t0,
        "seconds_per_epoch": float(np.median(trainer.epoch_times)),
        "holdout_history": history,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="dataset size (env steps)")
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the collector")
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings")
    parser.add_argument("--epochs", type=int, default=150, help="epoch cap of each run")
    parser.add_argument("--min_epochs", type=int, default=0, help="no early stop before this")
    parser.add_argument("--starts", type=int, default=1000, help="rollout start states")
    parser.add_argument("--modes", default="redeal,fixed", help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="5k steps, 3 epochs, 100 starts")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bootstrap.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.epochs, args.starts = 5_000, 3, 100

    t0 = time.perf_counter()
    ds = load_dataset(dataset_file(args.steps, args.data_seed), env="halfcheetah")
    print(f"dataset: {len(ds)} transitions ({time.perf_counter() - t0:.1f} s)", flush=True)
    _, holdout = split_indices(len(ds), 0.2, args.seed)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(holdout.numpy(), size=args.starts, replace=False)
    starts = ds.observations[pick]
    actions = rng.uniform(-1.0, 1.0, size=(5, args.starts, ds.actions.shape[1]))
    actions = actions.astype(np.float32)

    doc: dict[str, Any] = {
        "machine": machine_info(),
        "git_sha": git_sha(),
        "command": " ".join(["python", *sys.argv]),
        "dataset": {"name": ds.name, "n_transitions": len(ds), "collector_seed": args.data_seed},
        "settings": {
            "seed": args.seed,
            "epochs": args.epochs,
            "min_epochs": args.min_epochs,
            "rollout_starts": args.starts,
        },
        "runs": [],
    }
    for mode in args.modes.split(","):
        config = DynamicsConfig(
            env_name="halfcheetah-random-v2",
            seed=args.seed,
            epochs=args.epochs,
            min_epochs=args.min_epochs,
            bootstrap=mode,
        )
        print(f"training bootstrap={mode}", flush=True)
        trainer, row = train(config, ds)
        model = trainer.model.eval()
        row["disagreement"] = disagreement(model, starts, actions, seed=args.seed)

        def step(
            o: torch.Tensor, a: torch.Tensor, g: torch.Generator, model: DynamicsEnsemble = model
        ) -> tuple:
            next_obs, rew, _ = model.step(o, a, g)
            return next_obs, rew

        row["rollout_error"] = rollout_error(step, ds, holdout.numpy(), min(args.starts, 1000))
        doc["runs"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(
            f"  {mode}: {row['epochs']} epochs ({row['stop_reason']}), elite holdout MSE "
            f"{row['elite_holdout_mse']:.5f}, disagreement (all) "
            + " ".join(f"{v:.4f}" for v in row["disagreement"]["all_members"]),
            flush=True,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
