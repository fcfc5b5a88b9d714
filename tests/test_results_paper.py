"""`eor report --paper` (the paper's RAVL column) and `eor plot` over several datasets.

The packaged data file (eor/results/paper_ravl.json, docs/algorithm.md §5) holds the means as
eor's spec transcribes them, not checked against the paper: these tests check that it loads
and is shown as unchecked, and check the column with data files the tests write (made-up
numbers, never shown as the paper's).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eor.cli import main
from eor.results import plot as plot_mod
from eor.results import report as report_mod
from eor.results.report import PaperDataError, load_paper
from eor.results.runs import group_runs, load_runs

FIXTURES = Path(__file__).parent / "fixtures" / "run_dirs"

SOURCE = {
    "paper": "The Edge-of-Reach Problem in Offline Model-Based RL (test copy)",
    "version": "arXiv 2402.12527v2",
    "table": "Table T",
    "caption": "a caption",
    "units": "D4RL normalised score",
    "seeds": "mean ± std over 4 seeds",
    "checked": True,
}
# Made-up numbers for the test's own data file.
SCORES = {
    "halfcheetah-random-v2": {"mean": 12.5, "std": 1.25},
    "hopper-medium-v2": {"mean": 90.0, "std": 3.5},
}


def write_paper(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def paper_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid data file put in place of the package's."""
    p = write_paper(tmp_path / "paper.json", {"source": SOURCE, "scores": SCORES})
    monkeypatch.setattr(report_mod, "PAPER_FILE", p)
    return p


def make_sweep(root: Path, datasets: dict[str, str]) -> Path:
    """Run dirs under root/sweep, one per name -> dataset, copied from the hand-written fixtures
    with config.json's dataset (and a seed of their own)."""
    sweep = root / "sweep"
    for seed, (name, dataset) in enumerate(datasets.items()):
        d = sweep / name
        shutil.copytree(FIXTURES / "hc-eta1-seed0", d)
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(env_name=dataset, dataset_name=dataset, seed=seed)
        (d / "config.json").write_text(json.dumps(cfg))
        summary = json.loads((d / "summary.json").read_text())
        if "dataset" in summary:
            summary["dataset"] = dataset
            (d / "summary.json").write_text(json.dumps(summary))
    return sweep


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# --- the data file ------------------------------------------------------------------------------


def test_packaged_data_file_is_the_specs_means_marked_unchecked(tmp_path: Path) -> None:
    doc = load_paper()
    assert doc["source"]["checked"] is False
    envs, kinds = ("halfcheetah", "hopper", "walker2d"), ("random", "medium", "medium-replay",
                                                         "medium-expert")  # fmt: skip
    assert set(doc["scores"]) == {f"{e}-{k}-v2" for e in envs for k in kinds}
    assert all(entry["std"] is None for entry in doc["scores"].values())
    # docs/algorithm.md §5 carries the same numbers: the two must not drift apart.
    section = (Path(__file__).parents[1] / "docs" / "algorithm.md").read_text()
    section = section[section.index("## 5. Published results") :]
    for env in envs:
        row = next(ln for ln in section.splitlines() if ln.startswith(f"| {env} |"))
        cells = [float(c) for c in row.strip("|").split("|")[1:]]
        assert cells == [doc["scores"][f"{env}-{k}-v2"]["mean"] for k in kinds], env

    sweep = make_sweep(tmp_path, {"a": "halfcheetah-medium-v2", "b": "ant-random-v2"})
    code, out = invoke("report", str(sweep), "--paper")
    assert code == 0, out
    assert "≈: not checked against the paper's table" in out
    rows = {ln.split("|")[1].strip(): ln for ln in out.splitlines() if ln.startswith("| ")}
    assert "| ≈78.7 |" in rows["halfcheetah-medium-v2"]
    assert "| — |" in rows["ant-random-v2"]


def test_paper_file_option_and_its_errors(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, {"a": "halfcheetah-random-v2"})
    own = write_paper(tmp_path / "mine.json", {"source": SOURCE, "scores": SCORES})
    code, out = invoke("report", str(sweep), "--paper_file", str(own))
    assert code == 0, out
    assert "| 12.5 ± 1.2 |" in out and "not checked" not in out  # checked: no ≈
    code, out = invoke("report", str(sweep), "--paper_file", str(tmp_path / "nope.json"))
    assert code == 2 and "--paper_file" in out and "no data file" in out
    unchecked = {**SOURCE}
    del unchecked["checked"]
    bad = write_paper(tmp_path / "bad.json", {"source": unchecked, "scores": SCORES})
    code, out = invoke("report", str(sweep), "--paper_file", str(bad))
    assert code == 2 and "'checked'" in out


def test_a_score_without_std_is_shown_without_one(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, {"a": "halfcheetah-random-v2"})
    own = write_paper(
        tmp_path / "mine.json",
        {"source": SOURCE, "scores": {"halfcheetah-random-v2": {"mean": 12.5, "std": None}}},
    )
    code, out = invoke("report", str(sweep), "--paper_file", str(own))
    assert code == 0 and "| 12.5 |" in out, out
    code, out = invoke("report", str(sweep), "--paper_file", str(own), "--format", "csv")
    row = next(csv.DictReader(io.StringIO(out)))
    assert row["paper_ravl_mean"] == "12.5" and row["paper_ravl_std"] == ""


def test_valid_file_loads_with_float_scores(paper_file: Path) -> None:
    doc = load_paper()
    assert doc["source"] == SOURCE
    assert set(doc["scores"]) == set(SCORES)
    for entry in doc["scores"].values():
        assert all(isinstance(v, float) for v in entry.values())
        assert -20 <= entry["mean"] <= 200 and 0 <= entry["std"] <= 100


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"scores": SCORES}, "'source'"),
        ({"source": {**SOURCE, "table": ""}, "scores": SCORES}, "lacks table"),
        ({"source": SOURCE, "scores": {}}, "non-empty 'scores'"),
        ({"source": SOURCE, "scores": {"x": {"mean": "1", "std": 0.1}}}, "scores\\['x'\\]"),
        ({"source": SOURCE, "scores": {"x": {"mean": 1.0}}}, "scores\\['x'\\]"),
        ({"source": SOURCE, "scores": {"x": {"mean": None, "std": 1.0}}}, "scores\\['x'\\]"),
        ({"source": {**SOURCE, "checked": "yes"}, "scores": SCORES}, "'checked'"),
        ({"source": SOURCE, "scores": {"x": {"mean": 1e4, "std": 1.0}}}, "plausible"),
        ({"source": SOURCE, "scores": {"x": {"mean": 50.0, "std": -1.0}}}, "plausible"),
    ],
)
def test_malformed_file_is_refused(tmp_path: Path, doc: Any, match: str) -> None:
    with pytest.raises(PaperDataError, match=match):
        load_paper(write_paper(tmp_path / "bad.json", doc))


def test_not_json_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(PaperDataError, match="not valid JSON"):
        load_paper(p)


# --- eor report --paper -------------------------------------------------------------------------


def test_paper_column_markdown(tmp_path: Path, paper_file: Path) -> None:
    sweep = make_sweep(
        tmp_path, {"a": "halfcheetah-random-v2", "b": "walker2d-expert-v2", "c": "hopper-medium-v2"}
    )
    code, out = invoke("report", str(sweep), "--paper")
    assert code == 0, out
    assert "Table T" in out and "arXiv 2402.12527v2" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    col = header.index("paper RAVL")
    cells = {
        row[0]: row[col]
        for row in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:])
    }
    assert cells == {
        "halfcheetah-random-v2": "12.5 ± 1.2",  # 1.25 rounds half to even
        "hopper-medium-v2": "90.0 ± 3.5",
        "walker2d-expert-v2": "—",
    }
    # without --paper, no column
    code, out = invoke("report", str(sweep))
    assert code == 0 and "paper RAVL" not in out


def test_paper_column_csv_and_json(tmp_path: Path, paper_file: Path) -> None:
    sweep = make_sweep(tmp_path, {"a": "halfcheetah-random-v2", "b": "walker2d-expert-v2"})
    code, out = invoke("report", str(sweep), "--paper", "--format", "csv")
    assert code == 0, out
    rows = {r["dataset"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(rows["halfcheetah-random-v2"]["paper_ravl_mean"]) == 12.5
    assert float(rows["halfcheetah-random-v2"]["paper_ravl_std"]) == 1.25
    assert rows["walker2d-expert-v2"]["paper_ravl_mean"] == ""
    assert rows["walker2d-expert-v2"]["paper_ravl_std"] == ""

    code, out = invoke("report", str(sweep), "--paper", "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["paper_source"] == SOURCE
    by = {g["dataset"]: g["paper_ravl"] for g in doc["groups"]}
    assert by == {
        "halfcheetah-random-v2": SCORES["halfcheetah-random-v2"],
        "walker2d-expert-v2": None,
    }


# --- eor plot over several datasets -------------------------------------------------------------


def _capture_figure(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record the Figure that plot_groups saves."""
    from matplotlib.figure import Figure

    saved: list[Any] = []
    real = Figure.savefig

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        saved.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


def test_plot_one_column_of_panels_per_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = _capture_figure(monkeypatch)
    sweep = make_sweep(
        tmp_path, {"a": "halfcheetah-random-v2", "b": "hopper-medium-v2", "c": "hopper-medium-v2"}
    )
    groups = group_runs(load_runs(sorted(sweep.iterdir())))
    out = plot_mod.plot_groups(groups, tmp_path / "curves.png")
    assert out.is_file()
    (fig,) = saved
    axes = fig.axes
    assert len(axes) == 3 * 2  # three panels (score, Q, loss) per dataset
    score_titles = [ax.get_title() for ax in axes if "learning curves" in ax.get_title()]
    assert len(score_titles) == 2
    assert any("halfcheetah-random-v2" in t for t in score_titles)
    assert any("hopper-medium-v2" in t and "halfcheetah" not in t for t in score_titles)


def test_plot_single_dataset_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = _capture_figure(monkeypatch)
    groups = group_runs(load_runs([FIXTURES / "hc-eta1-seed0", FIXTURES / "hc-eta0-seed0"]))
    plot_mod.plot_groups(groups, tmp_path / "one.png")
    (fig,) = saved
    assert len(fig.axes) == 3
    assert tuple(fig.get_size_inches()) == plot_mod.FIGSIZE
