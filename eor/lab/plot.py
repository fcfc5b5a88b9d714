"""The figure of one method of `eor lab edge-of-reach`: four panels.

1. the reward map, the data square, the boundaries of R_{k−1} and R_k (so the band between them
   is the edge-of-reach set), the goal and the final policy's trajectories in the true env;
2. the return over training, beside the optimal return from the same start states;
3. the mean Q(s, π(s)) over the critics at dataset states, beside the true Q*(s, π(s))
   (a symmetric-log axis once |Q| passes 100: a collapse spans decades);
4. the Q-ensemble std at edge-of-reach states and at within-reach states (R_{k−1}).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIGSIZE = (11.0, 9.0)  # inches
DPI = 100


def plot_method(
    result: dict[str, Any], setup: Any, config: Any, out: str | os.PathLike[str]
) -> Path:
    """Draw `result` (a `train_method` result) into `out` (format from its suffix).

    setup, config: the run's `LabSetup` and `LabConfig` (`eor.lab.edge_of_reach`; not imported
    here, which imports this module).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    env, k = setup.env, config.steps_k
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    (ax_map, ax_ret), (ax_q, ax_std) = fig.subplots(2, 2)
    title = result["title"]
    if result["diverged_at_update"] is not None:
        title += f" (diverged at update {result['diverged_at_update']})"
    fig.suptitle(title)

    # 1. reward map, data, reach boundaries, trajectories
    n = 201
    axis = np.linspace(env.low, env.high, n)
    xx, yy = np.meshgrid(axis, axis, indexing="xy")  # [n, n], xx varies along columns
    grid = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1))
    reward = env.reward(grid).numpy().reshape(n, n)
    dist = setup.reach.distance(grid).numpy().reshape(n, n)
    extent = (env.low, env.high, env.low, env.high)
    image = ax_map.imshow(reward, origin="lower", extent=extent, cmap="viridis")
    fig.colorbar(image, ax=ax_map, label="reward −‖s′ − goal‖")
    ax_map.contour(
        xx,
        yy,
        dist,
        levels=[(k - 1) * env.step_size, k * env.step_size],
        colors=["white", "red"],
        linewidths=1.2,
    )
    (x0, y0), (x1, y1) = env.data_low, env.data_high
    ax_map.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="black", linewidth=1.5)
    )
    for traj in result["final_trajectories"][:10]:
        t = np.asarray(traj)
        ax_map.plot(t[:, 0], t[:, 1], color="orange", linewidth=1.0, marker=".", markersize=2)
        ax_map.plot(t[0, 0], t[0, 1], "o", color="black", markersize=3)
    ax_map.plot(*env.goal, marker="*", color="red", markersize=14, linestyle="none")
    ax_map.set_xlim(env.low, env.high)
    ax_map.set_ylim(env.low, env.high)
    ax_map.set_title(
        f"final policy (orange); data (black square); R_{k - 1} (white), R_{k} (red)", fontsize=9
    )

    history = result["history"]
    x = np.array([r["updates"] for r in history], dtype=np.float64)

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in history], dtype=float)

    # 2. returns
    ax_ret.plot(x, series("return_mean"), marker="o", markersize=3, label="policy")
    ax_ret.axhline(setup.optimal_return, color="black", linestyle="--", label="optimal")
    ax_ret.set_title(f"return over {config.eval_horizon} steps, {config.eval_starts} starts")
    ax_ret.set_xlabel("updates")
    ax_ret.legend()

    # 3. mean Q on the data
    q_mean, q_true = series("q_data_mean"), series("q_data_true")
    ax_q.plot(x, q_mean, marker="o", markersize=3, label="mean Q(s, π(s))")
    ax_q.plot(x, q_true, linestyle="--", color="black", label="true Q*(s, π(s))")
    finite = np.abs(q_mean[np.isfinite(q_mean)])
    if finite.size and finite.max() > 100.0:  # a collapse spans decades
        ax_q.set_yscale("symlog", linthresh=10.0)
    ax_q.set_title("Q at dataset states")
    ax_q.set_xlabel("updates")
    ax_q.legend()

    # 4. ensemble std, edge vs within reach
    ax_std.plot(
        x, series("q_std_edge"), marker="o", markersize=3, color="red", label="edge-of-reach"
    )
    ax_std.plot(
        x, series("q_std_within"), marker="o", markersize=3, color="tab:blue", label="within reach"
    )
    stds = np.concatenate([series("q_std_edge"), series("q_std_within")])
    stds = stds[np.isfinite(stds)]
    if stds.size and stds.min() > 0:
        ax_std.set_yscale("log")
    ax_std.set_title(f"Q-ensemble std at π(s) (N = {result['num_critics']})")
    ax_std.set_xlabel("updates")
    ax_std.legend()

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
