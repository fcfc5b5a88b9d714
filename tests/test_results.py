"""`eor plot` / `eor report` and the run-directory reader (eor.results).

The fixture runs in tests/fixtures/run_dirs/ are hand-written (3 epochs of 200 updates each):

    hc-eta1-seed0  eta=1.0, seed 0, finished: eval scores 10, 30, 20; summary wall 120 s
    hc-eta1-seed1  eta=1.0, seed 1, NO summary.json (interrupted): eval scores 15, 50, 30;
                   its last record's time is 100 s
    hc-eta0-seed0  eta=0.0, seed 0, finished: eval scores 5, 8, 6; summary wall 90 s
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from eor.cli import main
from eor.results import plot as plot_mod
from eor.results.report import mean_std, render, summarise
from eor.results.runs import (
    RunDirError,
    differing_fields,
    find_run_dirs,
    group_runs,
    load_run,
    load_runs,
    read_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures" / "run_dirs"
ETA1_S0 = FIXTURES / "hc-eta1-seed0"
ETA1_S1 = FIXTURES / "hc-eta1-seed1"
ETA0_S0 = FIXTURES / "hc-eta0-seed0"

# The report's numbers, by hand from the fixtures (population std, ddof = 0):
#   eta=1.0: last = [20, 30] -> mean 25, std sqrt((25 + 25) / 2) = 5
#            best = [30, 50] -> mean 40, std sqrt((100 + 100) / 2) = 10
#            wall = [120 (summary.json), 100 (last record of the unfinished run)] -> 110
#   eta=0.0: last = [6] -> 6 ± 0, best = [8] -> 8 ± 0, wall 90
#   all runs: 600 updates.
HAND = {
    1.0: dict(last=(25.0, 5.0), best=(40.0, 10.0), seeds=2, finished=1, updates=600.0, wall=110.0),
    0.0: dict(last=(6.0, 0.0), best=(8.0, 0.0), seeds=1, finished=1, updates=600.0, wall=90.0),
}


def invoke(*args: str) -> tuple[int, str, str]:
    """Run `eor ARGS`; returns (exit code, stdout, stdout+stderr)."""
    try:  # click < 8.2 mixes stderr into result.stdout unless told not to
        runner, interleaved = CliRunner(mix_stderr=False), False  # type: ignore[call-arg]
    except TypeError:  # click >= 8.2 keeps them apart; result.output interleaves both
        runner, interleaved = CliRunner(), True
    result = runner.invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    both = result.output if interleaved else result.stdout + result.stderr
    return result.exit_code, result.stdout, both


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- reading runs -------------------------------------------------------------------------------


def test_load_run_finished_and_unfinished() -> None:
    done = load_run(ETA1_S0)
    assert done.finished and done.seed == 0 and done.dataset == "halfcheetah-random-v2"
    assert [e["score_mean"] for e in done.evals] == [10.0, 30.0, 20.0]
    assert [r["updates"] for r in done.train] == [100, 200, 300, 400, 500, 600]
    assert len(done.rollout) == 3
    # summary.json and the metrics agree on the finished run
    assert done.last_score == done.metrics_last_score == 20.0
    assert done.best_score == done.metrics_best_score == 30.0
    assert (done.total_updates, done.wall_time_s) == (600, 120.0)

    running = load_run(ETA1_S1)  # no summary.json: everything from metrics.jsonl
    assert not running.finished and running.summary is None
    assert (running.last_score, running.best_score) == (30.0, 50.0)
    assert (running.total_updates, running.wall_time_s) == (600, 100.0)


def test_summary_json_is_preferred_and_disagreement_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = copy_run(ETA1_S0, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(last_score=21.5, best_score=33.0, total_updates=640, wall_time_s=125.0)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    run = load_run(run_dir)
    with caplog.at_level(logging.WARNING, logger="eor.results.runs"):
        assert (run.last_score, run.best_score) == (21.5, 33.0)
    assert (run.total_updates, run.wall_time_s) == (640, 125.0)
    assert "disagrees" in caplog.text and "last_score" in caplog.text


def test_grouping_ignores_seed_and_paths() -> None:
    runs = load_runs([ETA0_S0, ETA1_S1, ETA1_S0])
    groups = group_runs(runs)
    assert [sorted(g.seeds) for g in groups] == [[0], [0, 1]]  # sorted by dataset, then config
    assert [g.config["eta"] for g in groups] == [0.0, 1.0]
    # the two eta=1 seeds have different load_model_dir and run_dir, yet one group
    assert {r.config["load_model_dir"] for r in groups[1].runs} == {
        "models/hc-seed0",
        "models/hc-seed1",
    }
    assert differing_fields(groups) == ["eta"]


def test_directory_of_runs_is_expanded(tmp_path: Path) -> None:
    assert find_run_dirs([FIXTURES]) == [ETA0_S0, ETA1_S0, ETA1_S1]
    nested = tmp_path / "runs"
    copy_run(ETA1_S0, nested / "hc" / "a" / "s0")
    copy_run(ETA1_S1, nested / "hc" / "b" / "s1")
    (nested / "notes").mkdir()
    found = find_run_dirs([nested, nested / "hc" / "a" / "s0"])  # named twice: read once
    assert found == [nested / "hc" / "a" / "s0", nested / "hc" / "b" / "s1"]
    with pytest.raises(RunDirError, match="no run directory found below"):
        find_run_dirs([nested / "notes"])


def test_truncated_last_line_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = copy_run(ETA1_S1, tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "epoch": 4, "updates": 7')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="eor.results.runs"):
        run = load_run(run_dir)
    assert "truncated" in caplog.text and "metrics.jsonl:13" in caplog.text
    assert run.total_updates == 600 and len(run.train) == 6 and run.last_score == 30.0


def test_cli_shows_the_truncation_warning(tmp_path: Path) -> None:
    run_dir = copy_run(ETA1_S1, tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "ev')
    code, out, both = invoke("report", str(run_dir), "--format", "csv")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 1  # stdout stays clean
    assert "warning:" in both and "truncated last line" in both and "metrics.jsonl:13" in both


def test_resumed_run_replaces_repeated_records(tmp_path: Path) -> None:
    # Killed during epoch 3 after a checkpoint at 400 updates, resumed from there: the records
    # of the lost part of epoch 3 are logged again; the later ones count.
    path = tmp_path / "metrics.jsonl"
    recs = [
        {"kind": "eval", "epoch": 1, "updates": 200, "time": 1, "score_mean": 1.0},
        {"kind": "eval", "epoch": 2, "updates": 400, "time": 2, "score_mean": 2.0},
        {"kind": "train", "epoch": 3, "updates": 500, "time": 3, "critic_loss": 9.0},
        {"kind": "train", "epoch": 3, "updates": 500, "time": 4, "critic_loss": 5.0},
        {"kind": "eval", "epoch": 3, "updates": 600, "time": 5, "score_mean": 3.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = read_metrics(path)
    assert [r["critic_loss"] for r in m["train"]] == [5.0]
    assert [r["score_mean"] for r in m["eval"]] == [1.0, 2.0, 3.0]


def test_status_of_interrupted_and_unsummarised_runs(tmp_path: Path) -> None:
    a = copy_run(ETA1_S0, tmp_path / "a")
    summary = json.loads((a / "summary.json").read_text())
    summary.update(status="interrupted", last_score=None, best_score=None)
    (a / "summary.json").write_text(json.dumps(summary))
    b = copy_run(ETA1_S1, tmp_path / "b")
    runs = load_runs([a, b])
    assert [(r.status, r.finished) for r in runs] == [
        ("interrupted", False),
        ("no summary", False),
    ]
    assert (runs[0].last_score, runs[0].best_score) == (20.0, 30.0)  # None in summary: metrics
    assert load_run(ETA1_S0).status == "completed"
    md = render(summarise(group_runs(runs)), "markdown")
    assert "| 2 (1 interrupted, 1 no summary) |" in md


def test_stale_summary_of_a_resumed_run_is_ignored(tmp_path: Path) -> None:
    # Interrupted at 400 updates (summary.json written then), resumed, now at 600 and going.
    run_dir = copy_run(ETA1_S1, tmp_path / "run")
    stale = {"status": "interrupted", "last_score": 50.0, "best_score": 50.0}
    stale.update(total_updates=400, wall_time_s=66.0)
    (run_dir / "summary.json").write_text(json.dumps(stale))
    run = load_run(run_dir)
    assert run.status == "stale summary" and not run.finished
    assert (run.last_score, run.best_score) == (30.0, 50.0)  # from the metrics
    assert (run.total_updates, run.wall_time_s) == (600, 100.0)


def test_seeds_sorted_numerically(tmp_path: Path) -> None:
    dirs = []
    for seed in (10, 2):
        d = copy_run(ETA1_S0, tmp_path / f"s{seed}")
        cfg = json.loads((d / "config.json").read_text())
        cfg["seed"] = seed
        (d / "config.json").write_text(json.dumps(cfg))
        dirs.append(d)
    (group,) = group_runs(load_runs(dirs))
    assert group.seeds == [2, 10]


def test_run_names_and_saving_do_not_split_seeds(tmp_path: Path) -> None:
    changes = [
        {"wandb_group": "a", "name": "ravl", "name_prefix": "", "save": False},
        {"wandb_group": "b", "name": "try2", "name_prefix": "x", "save": True},
    ]
    dirs = []
    for i, (src, change) in enumerate(zip((ETA1_S0, ETA1_S1), changes, strict=True)):
        d = copy_run(src, tmp_path / f"r{i}")
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
        dirs.append(d)
    (group,) = group_runs(load_runs(dirs))
    assert group.seeds == [0, 1]


def test_dataset_given_as_a_path_groups_by_name(tmp_path: Path) -> None:
    dirs = []
    for i, (src, path) in enumerate([(ETA1_S0, "/data/hc.hdf5"), (ETA1_S1, "/mnt/x/hc.hdf5")]):
        d = copy_run(src, tmp_path / f"r{i}")
        cfg = json.loads((d / "config.json").read_text())
        cfg["dataset"] = path
        (d / "config.json").write_text(json.dumps(cfg))
        dirs.append(d)
    groups = group_runs(load_runs(dirs))
    assert len(groups) == 1 and groups[0].config["dataset"] == "halfcheetah-random-v2"


# --- bad inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["plot", "report"])
def test_missing_directory_is_a_clear_error(tmp_path: Path, command: str) -> None:
    code, _, out = invoke(command, str(tmp_path / "nope"))
    assert code == 2
    assert "RUN_DIR" in out and "nope: no such directory" in out


def test_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunDirError, match=r"config\.json: file not found"):
        load_run(tmp_path)
    code, _, out = invoke("report", str(tmp_path))
    assert code == 2 and "config.json" in out


def test_missing_metrics_jsonl(tmp_path: Path) -> None:
    run_dir = copy_run(ETA1_S0, tmp_path / "run")
    (run_dir / "metrics.jsonl").unlink()
    with pytest.raises(RunDirError, match=r"metrics\.jsonl: file not found"):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("config.json", "{not json", r"config\.json: not valid JSON"),
        ("config.json", "[1, 2]", r"config\.json: expected a JSON object"),
        ("summary.json", '{"last_score": 1', r"summary\.json: not valid JSON"),
    ],
)
def test_corrupt_json_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    run_dir = copy_run(ETA1_S0, tmp_path / "run")
    (run_dir / name).write_text(text)
    with pytest.raises(RunDirError, match=match):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("{garbage", r"metrics\.jsonl:2: not valid JSON"),
        ('{"epoch": 1, "updates": 5}', r"metrics\.jsonl:2: record has no 'kind'"),
        ('{"kind": "eval", "updates": 5}', r"metrics\.jsonl:2: eval record lacks score_mean"),
        ('{"kind": "eval", "updates": "x", "score_mean": 1}', r"'updates' should be a number"),
        ("[1]", r"metrics\.jsonl:2: expected a JSON object"),
    ],
)
def test_corrupt_metrics_line_names_file_and_line(
    tmp_path: Path, bad_line: str, match: str
) -> None:
    run_dir = copy_run(ETA1_S0, tmp_path / "run")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, bad_line)  # not the last line: an error, not a truncated write
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match=match):
        load_run(run_dir)
    code, _, out = invoke("report", str(run_dir))
    assert code == 2 and "metrics.jsonl:2" in out


# --- report -------------------------------------------------------------------------------------


def test_population_std_is_the_convention() -> None:
    assert mean_std([20.0, 30.0]) == (25.0, 5.0)  # the sample std would be 7.07
    assert mean_std([20.0, 30.0], ddof=1)[1] == pytest.approx(math.sqrt(50.0))
    assert mean_std([6.0]) == (6.0, 0.0)
    assert mean_std([]) == (None, None)
    code, out, _ = invoke("report", "--help")
    assert code == 0 and "population std" in out and "ddof=0" in out


def test_report_numbers_equal_hand_computation() -> None:
    stats = summarise(group_runs(load_runs([FIXTURES])))
    assert len(stats) == 2
    for s in stats:
        want = HAND[s.config["eta"]]
        assert (s.last_score_mean, s.last_score_std) == pytest.approx(want["last"])
        assert (s.best_score_mean, s.best_score_std) == pytest.approx(want["best"])
        assert s.n_runs == s.n_scored == want["seeds"]
        assert s.n_finished == want["finished"]
        assert s.updates_mean == pytest.approx(want["updates"])
        assert s.wall_time_s_mean == pytest.approx(want["wall"])
        assert s.label == f"eta={s.config['eta']}"


def test_report_json_parses_and_matches() -> None:
    code, out, _ = invoke("report", str(FIXTURES), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert "population" in doc["std"]
    assert len(doc["groups"]) == 2
    for g in doc["groups"]:
        want = HAND[g["config"]["eta"]]
        assert (g["last_score_mean"], g["last_score_std"]) == pytest.approx(want["last"])
        assert (g["best_score_mean"], g["best_score_std"]) == pytest.approx(want["best"])
        assert g["wall_time_s_mean"] == pytest.approx(want["wall"])
        assert len(g["seeds"]) == want["seeds"] and len(g["run_dirs"]) == want["seeds"]


def test_report_csv_parses_and_matches() -> None:
    code, out, _ = invoke("report", str(ETA1_S0), str(ETA1_S1), str(ETA0_S0), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2
    for row in rows:
        want = HAND[float(row["config"].removeprefix("eta="))]
        assert row["dataset"] == "halfcheetah-random-v2"
        assert float(row["last_score_mean"]) == pytest.approx(want["last"][0])
        assert float(row["last_score_std_ddof0"]) == pytest.approx(want["last"][1])
        assert float(row["best_score_mean"]) == pytest.approx(want["best"][0])
        assert float(row["best_score_std_ddof0"]) == pytest.approx(want["best"][1])
        assert int(row["n_seeds"]) == want["seeds"]
        assert float(row["updates_mean"]) == want["updates"]
        assert float(row["wall_time_s_mean"]) == pytest.approx(want["wall"])


def test_report_markdown_default() -> None:
    code, out, _ = invoke("report", str(FIXTURES))
    assert code == 0
    assert "population std (ddof=0)" in out.splitlines()[0]
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert len(table) == 4  # header, rule, two groups
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    assert cells[0] == [
        "dataset",
        "config",
        "seeds",
        "last score",
        "best score",
        "updates (mean)",
        "wall time (mean)",
    ]
    assert cells[2] == [
        "halfcheetah-random-v2",
        "eta=0.0",
        "1",
        "6.0 ± 0.0",
        "8.0 ± 0.0",
        "600",
        "1m 30s",
    ]
    assert cells[3] == [
        "halfcheetah-random-v2",
        "eta=1.0",
        "2 (1 no summary)",
        "25.0 ± 5.0",
        "40.0 ± 10.0",
        "600",
        "1m 50s",
    ]


def test_report_run_without_evaluations(tmp_path: Path) -> None:
    run_dir = copy_run(ETA1_S1, tmp_path / "run")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")  # rollout + 2 train
    stats = summarise(group_runs(load_runs([run_dir])))
    assert stats[0].last_score_mean is None and stats[0].n_scored == 0
    assert stats[0].updates_mean == 200
    assert "| — | — | 200 |" in render(stats, "markdown")
    assert json.loads(render(stats, "json"))["groups"][0]["best_score_mean"] is None
    with pytest.raises(ValueError, match="format must be one of"):
        render(stats, "xml")


# --- plot ---------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_valid_png(path: Path) -> None:
    assert path.is_file()
    expected = (
        round(plot_mod.FIGSIZE[0] * plot_mod.DPI),
        round(plot_mod.FIGSIZE[1] * plot_mod.DPI),
    )
    assert png_size(path) == expected == (1000, 1100)
    assert path.stat().st_size > 30_000  # three panels of curves, text and legends, not blank


def test_plot_one_run_default_out(tmp_path: Path) -> None:
    run_dir = copy_run(ETA1_S0, tmp_path / "run")
    code, out, _ = invoke("plot", str(run_dir))
    assert code == 0
    assert out.strip() == str(run_dir / "learning_curve.png")
    assert_valid_png(run_dir / "learning_curve.png")


def test_plot_several_runs_default_out_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("plot", str(FIXTURES))  # a directory of runs: three runs, two groups
    assert code == 0 and out.strip() == "learning_curves.png"
    assert_valid_png(tmp_path / "learning_curves.png")


def test_plot_out_option(tmp_path: Path) -> None:
    target = tmp_path / "figs" / "cmp.png"
    code, out, _ = invoke("plot", str(ETA1_S0), str(ETA0_S0), "--out", str(target))
    assert code == 0 and out.strip() == str(target)
    assert_valid_png(target)
    code, _, out = invoke("plot", str(ETA1_S0), "--out", str(tmp_path / "cmp.txt"))
    assert code == 2 and "--out must end in .png" in out


def test_plot_run_without_evaluations(tmp_path: Path) -> None:
    run_dir = copy_run(ETA1_S1, tmp_path / "run")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")
    path = plot_mod.plot_groups(group_runs(load_runs([run_dir])), tmp_path / "x.png")
    assert png_size(path) == (1000, 1100)


def test_aligned_mean_std_over_seeds() -> None:
    runs = load_runs([ETA1_S0, ETA1_S1])
    x, mean, std, n = plot_mod.aligned(runs, "eval", "score_mean")
    assert x.tolist() == [200.0, 400.0, 600.0]
    assert mean.tolist() == [12.5, 40.0, 25.0]  # (10+15)/2, (30+50)/2, (20+30)/2
    assert std.tolist() == [2.5, 10.0, 5.0]
    assert n.tolist() == [2, 2, 2]


# --- a real run directory, written by the trainer -----------------------------------------------


def make_real_runs(root: Path, seeds: tuple[int, ...]) -> list[Path]:
    """Tiny real RAVL runs (HalfCheetah, 3 epochs of 20 updates, 2 eval episodes of 20 steps)
    written by `eor.agent.trainer.train_agent`, the code behind `eor train-agent`. The data and
    the (untrained) dynamics model are generated here so that no dataset or model file is
    needed; everything the run directory holds comes from the trainer."""
    import numpy as np
    import torch

    import eor
    from eor.agent import trainer
    from eor.agent.config import TrainAgentConfig
    from eor.dynamics import DynamicsEnsemble
    from eor.envs import get_env

    spec = get_env("halfcheetah")
    rng = np.random.default_rng(0)
    n = 1000
    obs = rng.standard_normal((n, spec.obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, spec.act_dim)).astype(np.float32)
    rew = rng.standard_normal(n).astype(np.float32)
    out = []
    for seed in seeds:
        model = DynamicsEnsemble(
            spec.obs_dim,
            spec.act_dim,
            num_members=3,
            num_elites=2,
            hidden_dim=16,
            env_name="halfcheetah",
            generator=torch.Generator().manual_seed(seed),
        )
        components = trainer.Components(
            env_spec=spec,
            real_buffer=eor.ReplayBuffer.from_arrays(
                obs, act, rew, obs + 0.01, np.zeros(n, np.float32), seed=seed
            ),
            model=model,
            dataset_name="halfcheetah-random-v2",
            dataset_source="generated in test_results.py",
        )
        run_dir = root / f"hc-s{seed}"
        config = TrainAgentConfig(
            env_name="halfcheetah-random-v2",
            seed=seed,
            device="cpu",
            run_dir=str(run_dir),
            load_model_dir=str(root / "unused-model-dir"),
            epochs=3,
            updates_per_epoch=20,
            log_every=5,
            eval_episodes=2,
            eval_max_steps=20,
            batch_size=32,
            rollouts_per_epoch=64,
            steps_k=2,
            hidden_dim=32,
            num_critics=2,
            quiet=True,
            # one intra-op thread: tiny matmuls on a shared 2-core machine are ~10x slower with
            # threads fighting over the cores
            deterministic=True,
        )
        trainer.train_agent(config, components=components)
        out.append(run_dir)
    return out


def test_plot_and_report_of_real_runs(tmp_path: Path) -> None:
    dirs = make_real_runs(tmp_path / "runs", seeds=(0, 1))
    runs = load_runs([tmp_path / "runs"])
    assert [r.path for r in runs] == dirs
    for run in runs:
        assert run.finished and run.total_updates == 60
        assert [e["updates"] for e in run.evals] == [20, 40, 60]
        assert [r["updates"] for r in run.train] == list(range(5, 61, 5))
        # summary.json and the metrics must agree (prefer-summary path == metrics path)
        assert run.last_score == pytest.approx(run.metrics_last_score, abs=1e-9)
        assert run.best_score == pytest.approx(run.metrics_best_score, abs=1e-9)
    groups = group_runs(runs)
    assert len(groups) == 1 and sorted(groups[0].seeds) == [0, 1]  # seeds of one config

    code, out, _ = invoke("report", str(tmp_path / "runs"), "--format", "json")
    assert code == 0
    (g,) = json.loads(out)["groups"]
    lasts = [r.metrics_last_score for r in runs]
    assert g["last_score_mean"] == pytest.approx(sum(lasts) / 2)
    assert g["last_score_std"] == pytest.approx(abs(lasts[0] - lasts[1]) / 2)  # ddof=0, n=2

    code, out, _ = invoke("plot", str(dirs[0]))
    # the learning curves, then the edge-of-reach diagnostics (tests/test_agent_diagnostics.py)
    curves, reach = dirs[0] / "learning_curve.png", dirs[0] / "learning_curve_reach.png"
    assert code == 0 and out.split() == [str(curves), str(reach)]
    assert_valid_png(curves)
    assert png_size(reach) == (1200, 1100)


def test_plot_title_names_sac_for_train_online_runs(tmp_path: Path) -> None:
    assert plot_mod._title(group_runs(load_runs([ETA1_S0]))).startswith("RAVL learning curves: ")
    online = tmp_path / "sac"
    shutil.copytree(ETA1_S0, online)
    cfg = json.loads((online / "config.json").read_text())
    (online / "config.json").write_text(json.dumps({**cfg, "total_steps": 1000}))
    assert plot_mod._title(group_runs(load_runs([online]))).startswith("SAC learning curves: ")
