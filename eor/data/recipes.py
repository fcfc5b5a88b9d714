"""`make_dataset`: D4RL's dataset kinds made locally (`eor make-dataset`, docs/datasets.md).

One SAC run per env and seed (`eor.online`, run in this process) is kept in a recipe directory
in eor's store, `<store>/recipes/<env>-s<seed>/sac`, and reused by every kind that needs it:

    random         the uniform random policy, `steps` rows (eor.data.collect)
    medium         the SAC snapshot picked by `pick_medium` (about 1/3 of the expert's
                   evaluated return), `steps` rows of its stochastic policy
    medium-replay  the SAC replay buffer up to the medium snapshot's env step
    expert         the final SAC snapshot (the fully trained policy), `steps` rows
    medium-expert  the medium file, then the expert file
    full-replay    the whole SAC replay buffer

Files land where `eor collect` writes them (`sources.eor_path`), with the recipe's metadata in
their HDF5 attributes. A call resumes: the SAC run continues from its last checkpoint, files
already made by the same recipe are reused, and a kind made of others makes those first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eor.envs import DATASET_KINDS, EnvSpec, dataset_name, get_env, parse_dataset_name

from . import sources
from .collector import provenance_attrs, write_hdf5_atomic

D4RL_STEPS = 1_000_000
"""Rows of D4RL's random, medium and expert datasets (medium-expert has both: 2M)."""
SAC_STEPS = 1_000_000
"""Env steps of the SAC run (D4RL's full-replay datasets hold 1M transitions)."""
MEDIUM_FRACTION = 1.0 / 3.0
MEDIUM_TOLERANCE = 0.1
COLLECTED_KINDS = ("random", "medium", "expert")
REPLAY_KINDS = ("medium-replay", "full-replay")
REQUIRES: dict[str, tuple[str, ...]] = {"medium-expert": ("medium", "expert")}

Log = Callable[[str], None]


class RecipeError(ValueError):
    """A recipe cannot run as asked (unreachable medium band, a foreign file in the way, ...)."""


class RecipeInterrupted(RuntimeError):
    """The SAC run stopped early (Ctrl-C); its checkpoint is kept and a rerun continues."""


def recipe_dir(env: str, seed: int) -> Path:
    """`<eor store>/recipes/<env>-s<seed>`: the SAC run and nothing else."""
    return sources.eor_data_dir() / "recipes" / f"{env}-s{seed}"


# ----------------------------------------------------------------------------- medium snapshot
def pick_medium(
    policies: Sequence[dict[str, Any]],
    fraction: float = MEDIUM_FRACTION,
    tolerance: float = MEDIUM_TOLERANCE,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(medium, expert) snapshots of a SAC run's policies.json entries.

    expert: the last snapshot (highest env_steps). target = fraction * R_expert (evaluated
    return_mean); band = target +- tolerance * R_expert. medium: among the earlier snapshots
    whose return lies in the band, the one closest to the target (ties: the earliest).
    Raises RecipeError when there is no earlier snapshot, R_expert <= 0, or none is in the band
    (the message lists the returns there are).
    """
    if not 0 < fraction < 1:
        raise RecipeError(f"medium_fraction must be in (0, 1), got {fraction!r}")
    if not tolerance >= 0:
        raise RecipeError(f"medium_tolerance must be >= 0, got {tolerance!r}")
    if not policies:
        raise RecipeError("the SAC run has no policy snapshots (policies.json is empty)")
    ordered = sorted(policies, key=lambda p: int(p["env_steps"]))
    expert, earlier = ordered[-1], ordered[:-1]
    r_exp = float(expert["return_mean"])
    if not earlier:
        raise RecipeError(
            f"the SAC run has one policy snapshot only (env step {expert['env_steps']}); the "
            "medium policy is an earlier one (lower --sac eval_every)"
        )
    if not r_exp > 0:
        raise RecipeError(
            f"the expert (final) snapshot's evaluated return is {r_exp:.2f} <= 0: "
            f"{fraction:.3g} of it is no medium target (train SAC longer: --sac_steps)"
        )
    target, half = fraction * r_exp, tolerance * r_exp
    inside = [p for p in earlier if abs(float(p["return_mean"]) - target) <= half]
    if not inside:
        have = ", ".join(f"{int(p['env_steps'])}: {float(p['return_mean']):.1f}" for p in earlier)
        raise RecipeError(
            f"no SAC snapshot before the expert's has a return in the medium band "
            f"[{target - half:.1f}, {target + half:.1f}] ({fraction:.3g} +- {tolerance:.3g} of "
            f"the expert's {r_exp:.1f} at env step {expert['env_steps']}); snapshot returns "
            f"(env step: return): {have}. Widen --medium_tolerance, or evaluate more often "
            "(--sac eval_every=N) in a new recipe directory"
        )
    medium = min(inside, key=lambda p: (abs(float(p["return_mean"]) - target), p["env_steps"]))
    return medium, expert


def medium_band(r_expert: float, fraction: float, tolerance: float) -> str:
    t, h = fraction * r_expert, tolerance * r_expert
    return f"[{t - h:.2f}, {t + h:.2f}] (target {t:.2f} = {fraction:.4g} x expert {r_expert:.2f})"


# ----------------------------------------------------------------------------- SAC run
def sac_config(env: str, seed: int, sac_steps: int, options: dict[str, Any] | None) -> Any:
    """The recipe's `TrainOnlineConfig`: eor train-online's defaults, run_dir in the recipe
    directory, a buffer that never wraps, and `options` (TrainOnlineConfig fields) on top."""
    from eor.online import TrainOnlineConfig

    options = dict(options or {})
    names = {f.name for f in dataclasses.fields(TrainOnlineConfig)}
    for key in options:
        if key not in names or key in ("env_name", "seed", "run_dir", "total_steps"):
            raise RecipeError(
                f"--sac {key}: not a train-online setting the recipe lets you set (env, seed and "
                "steps are make-dataset's own options; run_dir is the recipe directory)"
            )
    config = TrainOnlineConfig(
        env_name=env,
        seed=seed,
        total_steps=sac_steps,
        run_dir=str(recipe_dir(env, seed) / "sac"),
        buffer_size=max(TrainOnlineConfig.buffer_size, sac_steps),
    ).replace(**options)
    try:
        config.validate()
    except ValueError as exc:
        raise RecipeError(f"--sac: {exc}") from None
    if not config.save_policies:
        raise RecipeError("--sac save_policies=False: the recipe needs the policy snapshots")
    if config.buffer_size < sac_steps:
        raise RecipeError(
            f"--sac buffer_size={config.buffer_size} < --sac_steps {sac_steps}: the replay "
            "datasets need the whole buffer"
        )
    return config


def ensure_sac(config: Any, log: Log) -> Path:
    """Train (or continue, or reuse) the recipe's SAC run; returns its run directory."""
    from eor.online import OnlineTrainer, TrainOnlineConfig
    from eor.online.config import RESUME_OVERRIDABLE

    run = Path(config.run_dir)
    latest = run / "checkpoints" / "latest.pt"
    if (run / "config.json").exists() and not latest.is_file():
        # Stopped before its first checkpoint: nothing to continue.
        log(f"SAC run {run} has no checkpoint yet: starting it again")
        for p in sorted(run.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
    if latest.is_file():
        saved = TrainOnlineConfig.from_dict(json.loads((run / "config.json").read_text()))
        differ = [
            f"{f.name} (saved {getattr(saved, f.name)!r}, now {getattr(config, f.name)!r})"
            for f in dataclasses.fields(TrainOnlineConfig)
            if f.name not in RESUME_OVERRIDABLE and f.name != "run_dir"
            if getattr(saved, f.name) != getattr(config, f.name)
        ]
        if differ:
            raise RecipeError(
                f"the SAC run in {run} was made with other settings: {'; '.join(differ)}. "
                f"Give the same options, or delete {run.parent} to start the recipe afresh"
            )
        summary = _read_json(run / "summary.json")
        done = int(summary.get("env_steps", -1)) if summary else -1
        if done > config.total_steps:
            raise RecipeError(
                f"--sac_steps {config.total_steps}: the SAC run in {run} already made {done} "
                f"env steps (its expert is the policy at {done}); pass --sac_steps {done}"
            )
        if summary and summary.get("status") == "completed" and done == config.total_steps:
            log(f"SAC run: reusing {run} ({done} env steps, completed)")
            return run
        overrides = {k: getattr(config, k) for k in RESUME_OVERRIDABLE}
        trainer = OnlineTrainer.resume(run, overrides=overrides)
        log(f"SAC run: continuing {run} from env step {trainer.env_steps}/{config.total_steps}")
    else:
        trainer = OnlineTrainer(config)
        log(
            f"SAC run: training {config.total_steps} env steps in {trainer.env_spec.gym_id} -> {run}"
        )
    t0 = time.perf_counter()
    summary = trainer.train()
    if summary["status"] != "completed":
        raise RecipeInterrupted(
            f"the SAC run stopped at env step {summary['env_steps']} ({summary['status']}); "
            f"its checkpoint is in {run}: rerun the same command to continue"
        )
    log(
        f"SAC run: done in {time.perf_counter() - t0:.0f} s, final return "
        f"{summary['last_return']:.1f}"
    )
    return run


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- files
def _read_attrs(path: Path) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


def _add_attrs(path: Path, attrs: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value


D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in D4RL_KEYS}


# ----------------------------------------------------------------------------- the recipe
@dataclasses.dataclass
class _Recipe:
    env: str
    spec: EnvSpec
    seed: int
    steps: int
    sac_steps: int
    fraction: float
    tolerance: float
    sac_options: dict[str, Any]
    device: str
    num_envs: int | None
    overwrite: set[str]
    progress: bool
    log: Log
    _run: Path | None = None
    _snapshots: tuple[dict[str, Any], dict[str, Any]] | None = None

    def sac(self) -> Path:
        if self._run is None:
            options = {"device": self.device, "quiet": not self.progress, **self.sac_options}
            config = sac_config(self.env, self.seed, self.sac_steps, options)
            self._run = ensure_sac(config, self.log)
        return self._run

    def snapshots(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from eor.online import read_policies

        if self._snapshots is None:
            medium, expert = pick_medium(read_policies(self.sac()), self.fraction, self.tolerance)
            self.log(
                f"medium: snapshot at env step {medium['env_steps']}, return "
                f"{medium['return_mean']:.1f}; band "
                f"{medium_band(expert['return_mean'], self.fraction, self.tolerance)}; expert: "
                f"env step {expert['env_steps']}, return {expert['return_mean']:.1f}"
            )
            self._snapshots = medium, expert
        return self._snapshots

    def expert(self) -> dict[str, Any]:
        """The final snapshot (no medium band needed: expert and full-replay use only this)."""
        from eor.online import read_policies

        policies = read_policies(self.sac())
        if not policies:
            raise RecipeError(f"the SAC run {self.sac()} has no policy snapshots")
        return max(policies, key=lambda p: int(p["env_steps"]))

    def recipe_attrs(self, kind: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {"recipe_kind": kind, "recipe": RECIPE_TEXT[kind]}
        if kind != "random":
            expert = self.expert()
            attrs.update(
                sac_run=str(self.sac()),
                sac_steps=int(self.sac_steps),
                expert_return=float(expert["return_mean"]),
            )
        if kind in ("medium", "medium-replay", "medium-expert"):
            self.snapshots()
            band = medium_band(expert["return_mean"], self.fraction, self.tolerance)
            attrs["medium_band"] = band
        return attrs

    def policy_attrs(self, snap: dict[str, Any]) -> dict[str, Any]:
        return {
            "policy_checkpoint": str(self.sac() / snap["path"]),
            "policy_env_step": int(snap["env_steps"]),
            "policy_return": float(snap["return_mean"]),
        }

    def existing(self, kind: str, path: Path) -> bool:
        """True when `path` holds this recipe's `kind` (reuse it); raises when something else
        is there; False when there is nothing (or it is to be overwritten)."""
        if kind in self.overwrite or not path.exists():
            return False
        try:
            attrs = _read_attrs(path)
        except Exception as exc:  # noqa: BLE001 - say which file is in the way and why
            raise RecipeError(
                f"{path} exists but cannot be read ({type(exc).__name__}: {exc}); pass --overwrite"
            ) from None
        want: dict[str, Any] = {"recipe_kind": kind, "seed": self.seed}
        if kind != "random":
            want["sac_steps"] = self.sac_steps
        if kind in COLLECTED_KINDS:
            want["steps"] = self.steps
        differ = [
            f"{k}={attrs.get(k)!r} (wanted {v!r})" for k, v in want.items() if attrs.get(k) != v
        ]
        if differ:
            raise RecipeError(
                f"{path} exists but was not made by this recipe: {', '.join(differ)}; pass "
                "--overwrite to replace it"
            )
        self.log(f"{dataset_name(self.env, kind)}: reusing {path}")
        return True

    def make(self, kind: str) -> Path:
        name = dataset_name(self.env, kind)
        path = sources.eor_path(name)
        for part in REQUIRES.get(kind, ()):
            self.make(part)
        if self.existing(kind, path):
            return path
        t0 = time.perf_counter()
        if kind in COLLECTED_KINDS:
            self._collect(kind, name, path)
        elif kind in REPLAY_KINDS:
            self._replay(kind, name, path)
        else:
            self._concatenate(kind, name, path)
        self.log(f"{name}: wrote {path} in {time.perf_counter() - t0:.1f} s")
        return path

    def _collect(self, kind: str, name: str, path: Path) -> None:
        from eor.data.collector import collect

        extra = self.recipe_attrs(kind)
        policy: Path | None = None
        if kind == "random":
            extra.update(policy_checkpoint="uniform random", policy_env_step=-1)
        else:
            snap = self.snapshots()[0] if kind == "medium" else self.expert()
            extra.update(self.policy_attrs(snap))
            policy = Path(extra["policy_checkpoint"])
        self.log(f"{name}: collecting {self.steps} steps -> {path}")
        tmp = path.with_name(f".{path.name}.recipe.part")
        try:
            collect(
                name,
                self.steps,
                self.seed,
                out=tmp,
                policy=policy,
                num_envs=self.num_envs,
                device=self.device,
                overwrite=True,
                progress=self.progress,
            )
            _add_attrs(tmp, extra)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _replay(self, kind: str, name: str, path: Path) -> None:
        from eor.online import read_replay

        extra = self.recipe_attrs(kind)
        if kind == "medium-replay":
            medium, _ = self.snapshots()
            before = int(medium["env_steps"])
            extra.update(self.policy_attrs(medium))
            extra["replay_before_step"] = before
        else:
            before = None
            extra["replay_before_step"] = -1
            extra["policy_checkpoint"] = "SAC training (every policy of the run)"
        replay = read_replay(self.sac(), before_step=before)
        arrays = {k: replay[k] for k in D4RL_KEYS}
        arrays["rewards"] = arrays["rewards"].astype(np.float32).reshape(-1)
        arrays["terminals"] = arrays["terminals"].reshape(-1)
        # A terminal wins over a time limit hit on the same step (as eor collect writes it).
        arrays["timeouts"] = arrays["timeouts"].reshape(-1) & ~arrays["terminals"]
        n = len(arrays["rewards"])
        attrs = {
            **provenance_attrs(name, self.spec, self.seed),
            "policy": f"replay:{self.sac()}",
            "steps": n,
            **extra,
        }
        self.log(f"{name}: {n} transitions of the SAC replay buffer -> {path}")
        write_hdf5_atomic(path, arrays, attrs)

    def _concatenate(self, kind: str, name: str, path: Path) -> None:
        parts = [sources.eor_path(dataset_name(self.env, p)) for p in REQUIRES[kind]]
        datas = [_read_arrays(p) for p in parts]
        first = datas[0]
        # The collector cuts the last episode of each file; end it there with a timeout so
        # that it does not run on into the next part's first episode.
        if len(first["rewards"]) and not first["terminals"][-1]:
            first["timeouts"][-1] = True
        arrays = {k: np.concatenate([d[k] for d in datas]) for k in D4RL_KEYS}
        medium, expert = self.snapshots()
        m, e = self.policy_attrs(medium), self.policy_attrs(expert)
        attrs = {
            **provenance_attrs(name, self.spec, self.seed),
            "policy": "; ".join(
                f"{p}: {_read_attrs(f).get('policy')}"
                for p, f in zip(REQUIRES[kind], parts, strict=True)
            ),
            "steps": len(arrays["rewards"]),
            **self.recipe_attrs(kind),
            "parts": json.dumps([str(p) for p in parts]),
            "policy_checkpoint": f"medium: {m['policy_checkpoint']}; expert: {e['policy_checkpoint']}",
            "policy_env_step": f"medium: {m['policy_env_step']}; expert: {e['policy_env_step']}",
            "policy_return": f"medium: {m['policy_return']:.2f}; expert: {e['policy_return']:.2f}",
        }
        self.log(f"{name}: concatenating {', '.join(str(p) for p in parts)} -> {path}")
        write_hdf5_atomic(path, arrays, attrs)


RECIPE_TEXT = {
    "random": "D4RL random: the uniform random policy",
    "medium": "D4RL medium: the SAC snapshot closest to 1/3 of the expert's evaluated return "
    "(within the band), its stochastic policy",
    "medium-replay": "D4RL medium-replay: the SAC replay buffer before the medium snapshot's env step",
    "expert": "D4RL expert: the final SAC snapshot, its stochastic policy",
    "medium-expert": "D4RL medium-expert: the medium file, then the expert file",
    "full-replay": "D4RL full-replay: the whole SAC replay buffer",
}


def check_arguments(
    kind: str,
    steps: int | None,
    sac_steps: int,
    medium_fraction: float,
    medium_tolerance: float,
) -> int:
    """`make_dataset`'s numeric arguments for `kind`; returns the rows to collect (D4RL's when
    `steps` is None). RecipeError names the bad one."""
    if steps is not None and kind in REPLAY_KINDS:
        raise RecipeError(
            f"steps: {kind} is the SAC replay buffer as it is; --steps applies to random, "
            "medium, expert and medium-expert"
        )
    steps = D4RL_STEPS if steps is None else steps
    for label, value in (("steps", steps), ("sac_steps", sac_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"{label} must be a positive integer, got {value!r}")
    if not (isinstance(medium_fraction, (int, float)) and 0 < medium_fraction < 1):
        raise RecipeError(f"medium_fraction must be in (0, 1), got {medium_fraction!r}")
    if not (isinstance(medium_tolerance, (int, float)) and medium_tolerance >= 0):
        raise RecipeError(f"medium_tolerance must be >= 0, got {medium_tolerance!r}")
    return steps


def make_dataset(
    name: str,
    *,
    steps: int | None = None,
    sac_steps: int = SAC_STEPS,
    seed: int = 0,
    overwrite: bool = False,
    medium_fraction: float = MEDIUM_FRACTION,
    medium_tolerance: float = MEDIUM_TOLERANCE,
    sac_options: dict[str, Any] | None = None,
    device: str = "auto",
    num_envs: int | None = None,
    quiet: bool = False,
    progress: bool | None = None,
    log: Log | None = None,
) -> Path:
    """Make dataset `name` ({env}-{kind}-v2) by D4RL's recipe and return its file.

    steps: rows of each collected policy's data (random, medium, expert; medium-expert has
        2 x steps) [default 1M, D4RL's]; the replay kinds take the buffer as it is.
    overwrite: remake `name`'s file (not the files it is made of, nor the SAC run).
    sac_options: TrainOnlineConfig fields for the SAC run (e.g. hidden_dim, eval_every).
    """
    env, kind = parse_dataset_name(name)
    if kind not in DATASET_KINDS:  # pragma: no cover - parse_dataset_name checks it
        raise RecipeError(f"unknown dataset kind {kind!r}")
    steps = check_arguments(kind, steps, sac_steps, medium_fraction, medium_tolerance)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if log is None:
        log = (
            (lambda msg: None)
            if quiet
            else (lambda msg: print(f"[make-dataset] {msg}", file=sys.stderr))
        )
    recipe = _Recipe(
        env=env,
        spec=get_env(env),
        seed=int(seed),
        steps=steps,
        sac_steps=sac_steps,
        fraction=medium_fraction,
        tolerance=medium_tolerance,
        sac_options=dict(sac_options or {}),
        device=device,
        num_envs=num_envs,
        overwrite={kind} if overwrite else set(),
        progress=sys.stderr.isatty() and not quiet if progress is None else progress,
        log=log,
    )
    return recipe.make(kind)
