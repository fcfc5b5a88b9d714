"""The paper's central experiment at D4RL scale: base (SAC on k-step rollouts, η = 0, N = 2)
against RAVL (defaults), each with the simulator as the model (`--true_dynamics`) and with a
learned dynamics ensemble, on halfcheetah and hopper data. Not a test: hours on a CPU.

    python benchmarks/edge_of_reach_d4rl.py --out results/eor-d4rl               # the full recipe
    python benchmarks/edge_of_reach_d4rl.py --out /tmp/eor-d4rl --quick          # minutes, a smoke run
    python benchmarks/edge_of_reach_d4rl.py --out results/eor-d4rl --plot_only   # redraw

Each stage runs an `eor` command (what a user would type) and is skipped when its output exists,
so rerunning the same command resumes: the dataset (`eor collect ENV-random-v2`, or a D4RL file
already in eor's store with --dataset_kind), the dynamics model (`eor train-model`), then the four
agents (`eor train-agent`, resumed with `--resume` when interrupted). At the end it reads each
run's metrics.jsonl and writes OUT/results.json and OUT/edge_of_reach_d4rl.png: per env, the
policy's mean Q on the batch (`q_policy_mean`) over updates, the discounted Monte-Carlo return of
the evaluation episodes (`return_discounted_mean`, what the Q-values should approach), and the
value of an expert, its D4RL reference return per step / (1 − γ), which stands for the largest
achievable discounted return; and the normalised score over updates.

Expected (the paper, Figure 2 and §4): base's Q-values grow past anything achievable, with the
true dynamics as with the learned model (the failure is not model error); RAVL's stay bounded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import eor_command, git_sha, machine_info  # noqa: E402
from eor.data.sources import eor_path  # noqa: E402

METHODS = {
    "base": ["--eta", "0", "--num_critics", "2"],
    "ravl": [],  # the defaults of docs/algorithm.md §3 (N = 10, η = 1)
}
MODELS = ("true", "learned")
RUNS = tuple(f"{method}-{model}" for model in MODELS for method in METHODS)
GAMMA = 0.99


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def _expert_value(env_name: str) -> float:
    """An expert's discounted value: its D4RL reference return per step (1000-step episodes)
    over 1 − γ; no policy of the benchmark does much better."""
    from eor.envs.registry import get_env

    return get_env(env_name).ref_max_score / 1000 / (1 - GAMMA)


def run_env(env_name: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    out = args.out / env_name
    dataset = f"{env_name}-{args.dataset_kind}-v2"
    data_file = eor_path(dataset)  # where `eor collect` writes it, in $EOR_DATA_DIR
    log = out / "commands.log"
    if not data_file.exists():
        if args.dataset_kind != "random":
            raise SystemExit(f"{data_file}: not found; only random data is collected here")
        _run([*eor_command(), "collect", dataset, "--steps", str(args.steps), "--seed", str(args.seed),
              "--quiet"], env, log)  # fmt: skip
    model_dir = out / "model"
    runs = [r for r in RUNS if r in args.runs]
    if any(r.endswith("-learned") for r in runs) and not (model_dir / "config.json").exists():
        shutil.rmtree(model_dir, ignore_errors=True)
        _run([*eor_command(), "train-model", "--env_name", dataset, "--seed", str(args.seed),
              "--save_path", str(model_dir), "--max_epochs", str(args.model_epochs)], env, log)  # fmt: skip
    epochs = math.ceil(args.updates / args.updates_per_epoch)
    # The true dynamics first (the paper's point), then the learned model.
    for name in runs:
        method, model = name.split("-")
        method_args = METHODS[method]
        run_dir = out / name
        if (run_dir / "summary.json").exists():
            summary = json.loads((run_dir / "summary.json").read_text())
            if summary.get("total_updates", 0) >= epochs * args.updates_per_epoch:
                continue
        if (run_dir / "config.json").exists():
            cmd = [*eor_command(), "train-agent", "--resume", str(run_dir), "--epochs", str(epochs)]
        else:
            source = (
                ["--true_dynamics"] if model == "true" else ["--load_model_dir", str(model_dir)]
            )
            cmd = [*eor_command(), "train-agent", "--env_name", dataset, "--seed", str(args.seed),
                   *source, *method_args, "--run_dir", str(run_dir), "--epochs", str(epochs),
                   "--updates_per_epoch", str(args.updates_per_epoch),
                   "--rollouts_per_epoch", str(args.rollouts_per_epoch),
                   "--eval_every", str(args.eval_every), "--eval_episodes", str(args.eval_episodes),
                   "--log_every", str(args.log_every)]  # fmt: skip
        _run([*cmd, "--quiet"], env, log)
    return {"dataset": dataset, "expert_value": _expert_value(env_name)}


def collect_results(args: argparse.Namespace, meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from eor.results.runs import read_metrics

    results: dict[str, Any] = {}
    for env_name, info in meta.items():
        bound = info["expert_value"]
        runs: dict[str, Any] = {}
        for method in METHODS:
            for model in MODELS:
                metrics_file = args.out / env_name / f"{method}-{model}" / "metrics.jsonl"
                if not metrics_file.exists():
                    continue
                m = read_metrics(metrics_file)
                train = [
                    (r["updates"], r["q_policy_mean"]) for r in m["train"] if "q_policy_mean" in r
                ]
                evals = [(r["updates"], r["score_mean"]) for r in m["eval"]]
                mc = [(r["updates"], r["return_discounted_mean"]) for r in m["eval"]
                      if "return_discounted_mean" in r]  # fmt: skip
                q_last = train[-1][1] if train else None
                runs[f"{method}-{model}"] = {
                    "q_policy_mean": train,
                    "score": evals,
                    "return_discounted": mc,
                    "q_last": q_last,
                    "q_max": max((q for _, q in train), default=None),
                    "q_over_bound": None if q_last is None else q_last > bound,
                    "score_last": evals[-1][1] if evals else None,
                }
        results[env_name] = {**info, "q_bound": bound, "runs": runs}
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(results)
    fig, axes = plt.subplots(2, len(envs), figsize=(5.5 * len(envs), 7), squeeze=False)
    styles = {"base": "tab:red", "ravl": "tab:blue"}
    for col, env_name in enumerate(envs):
        res = results[env_name]
        q_ax, s_ax = axes[0][col], axes[1][col]
        for name, run in res["runs"].items():
            method, model = name.split("-")
            ls = "-" if model == "true" else "--"
            label = f"{'base (η=0, N=2)' if method == 'base' else 'RAVL'}, {model} dynamics"
            if run["q_policy_mean"]:
                u, q = zip(*run["q_policy_mean"], strict=True)
                q_ax.plot(u, q, ls, color=styles[method], label=label)
            if run["return_discounted"]:
                u, g = zip(*run["return_discounted"], strict=True)
                q_ax.plot(u, g, ls, color=styles[method], marker="x", ms=4, alpha=0.5,
                          label=f"{label}: discounted MC return")  # fmt: skip
            if run["score"]:
                u, s = zip(*run["score"], strict=True)
                s_ax.plot(u, s, ls, color=styles[method], marker="o", ms=3, label=label)
        q_ax.axhline(res["q_bound"], color="k", lw=1, ls=":", label="expert value (D4RL ref.) ")
        q_ax.set_yscale("symlog", linthresh=max(1.0, abs(res["q_bound"]) / 10))
        q_ax.set_title(f"{res['dataset']}: mean Q of the policy")
        s_ax.set_title(f"{res['dataset']}: normalised score")
        s_ax.set_xlabel("updates")
        q_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    p.add_argument("--envs", default="halfcheetah,hopper")
    p.add_argument(
        "--dataset_kind", default="random", help="random is collected; others must be in the store"
    )
    p.add_argument("--steps", type=int, default=200_000, help="dataset rows (random)")
    p.add_argument("--model_epochs", type=int, default=50)
    p.add_argument("--updates", type=int, default=30_000, help="agent updates per run")
    p.add_argument("--updates_per_epoch", type=int, default=1000)
    p.add_argument("--rollouts_per_epoch", type=int, default=10_000)
    p.add_argument("--eval_every", type=int, default=5)
    p.add_argument("--eval_episodes", type=int, default=5)
    p.add_argument("--log_every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs",
        default=",".join(RUNS),
        help="which runs, comma-separated (two processes can share the work: one takes the "
        "true-dynamics pair, the other the learned-model pair)",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, minutes")
    p.add_argument("--plot_only", action="store_true", help="redraw from existing runs")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.model_epochs, args.updates = 5000, 2, 200
        args.updates_per_epoch, args.rollouts_per_epoch = 100, 500
        args.eval_every, args.eval_episodes, args.log_every = 1, 1, 50
    env_names = [e.strip() for e in args.envs.split(",") if e.strip()]
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        p.error(f"--runs: unknown {', '.join(unknown)}; expected some of {', '.join(RUNS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    # One store for this process (eor_path) and the eor commands it runs.
    os.environ.setdefault("EOR_DATA_DIR", str(args.out / "data"))
    env = dict(os.environ)
    start = time.perf_counter()
    meta: dict[str, dict[str, Any]] = {}
    for env_name in env_names:
        if args.plot_only:
            dataset = f"{env_name}-{args.dataset_kind}-v2"
            meta[env_name] = {"dataset": dataset, "expert_value": _expert_value(env_name)}
        else:
            meta[env_name] = run_env(env_name, args, env)
    results = collect_results(args, meta)
    payload = {
        "machine": machine_info(),
        "git_sha": git_sha(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_s": time.perf_counter() - start,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot(results, args.out / "edge_of_reach_d4rl.png")
    for res in results.values():
        print(f"{res['dataset']}: expert value {res['q_bound']:.1f}")
        for name, run in res["runs"].items():
            print(f"  {name:<14} last mean Q {run['q_last']!s:>10.10}  max {run['q_max']!s:>10.10}  "
                  f"score {run['score_last']!s:.6}  over bound: {run['q_over_bound']}")  # fmt: skip
    print(f"wrote {args.out / 'results.json'} and {args.out / 'edge_of_reach_d4rl.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
