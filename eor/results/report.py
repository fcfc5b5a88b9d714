"""`eor report`: one row per (dataset, config), scores as mean ± std over seeds.

Per run: the *last* score is the last evaluation's normalised score_mean, the *best* score is
the largest score_mean over the run's evaluations (summary.json's values when it exists, the
metrics' otherwise). Per group, both are averaged over the runs (seeds) that have been evaluated,
with the **population** standard deviation (ddof = 0: sqrt(mean((x - mean)^2)), 0 for one seed),
the convention of numpy's default and of most offline-RL tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eor.results.runs import Group, differing_fields, group_label

# Degrees of freedom of the standard deviation over seeds (0 = population std).
STD_DDOF = 0
STD_NAME = "population std (ddof=0)"
SCORE_NOTE = (
    "Scores: D4RL normalised score, 100 * (return - random) / (expert - random); "
    f"mean ± {STD_NAME} over seeds."
)
FORMATS = ("markdown", "csv", "json")

# The paper's RAVL scores for `eor report --paper` (docs/algorithm.md §5): {"source": {...},
# "scores": {dataset name: {"mean": float, "std": float or null}}}. `source.checked` says whether
# the numbers were checked against the paper's table; the packaged file's were not (they are the
# means as the project's spec transcribes them, without stds), and every table that shows them
# says so. `eor report --paper_file F` uses another file of the same form (e.g. one copied
# exactly from the paper).
PAPER_FILE = Path(__file__).with_name("paper_ravl.json")
PAPER_SOURCE_FIELDS = ("paper", "version", "table", "caption", "units", "seeds")
PAPER_SCORE_RANGE = (-20.0, 200.0)  # plausible D4RL normalised scores
PAPER_STD_RANGE = (0.0, 100.0)


class PaperDataError(ValueError):
    """The paper's data file is missing or malformed."""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_paper(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check the paper's scores (PAPER_FILE by default); PaperDataError if bad."""
    p = Path(path) if path is not None else PAPER_FILE
    if not p.is_file():
        raise PaperDataError(
            f"no data file {p}. It holds the paper's RAVL scores: "
            '{"source": {...}, "scores": {"halfcheetah-medium-v2": {"mean": ..., "std": ...}, ...}} '
            "(docs/algorithm.md §5)."
        )
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise PaperDataError(f"{p}: not valid JSON ({exc})") from None
    source = doc.get("source") if isinstance(doc, dict) else None
    scores = doc.get("scores") if isinstance(doc, dict) else None
    if not isinstance(source, dict) or not isinstance(scores, dict) or not scores:
        raise PaperDataError(f"{p}: expected an object with 'source' and non-empty 'scores'")
    missing = [f for f in PAPER_SOURCE_FIELDS if not source.get(f)]
    if missing:
        raise PaperDataError(f"{p}: 'source' lacks {', '.join(missing)}")
    if not isinstance(source.get("checked"), bool):
        raise PaperDataError(
            f"{p}: 'source' needs 'checked': true or false (were the numbers checked against "
            "the paper's table?)"
        )
    for name, entry in scores.items():
        ok = isinstance(entry, dict) and set(entry) == {"mean", "std"}
        if (
            not ok
            or not _number(entry["mean"])
            or not (entry["std"] is None or _number(entry["std"]))
        ):
            raise PaperDataError(
                f"{p}: scores[{name!r}] must be {{'mean': number, 'std': number or null}}"
            )
        mean = float(entry["mean"])
        std = None if entry["std"] is None else float(entry["std"])
        if not (PAPER_SCORE_RANGE[0] <= mean <= PAPER_SCORE_RANGE[1]) or not (
            std is None or PAPER_STD_RANGE[0] <= std <= PAPER_STD_RANGE[1]
        ):
            raise PaperDataError(f"{p}: scores[{name!r}] = {entry} is out of the plausible range")
        scores[name] = {"mean": mean, "std": std}
    return doc


def paper_score(paper: dict[str, Any], dataset: str) -> dict[str, float | None] | None:
    """The paper's {"mean", "std"} for `dataset` (e.g. halfcheetah-medium-v2), None if absent;
    "std" is None where the file has none."""
    entry = paper["scores"].get(dataset)
    return dict(entry) if entry is not None else None


def _fmt_paper(paper: dict[str, Any], dataset: str) -> str:
    """The markdown cell: "78.7 ± 2.0", "78.7" without a std, "≈78.7" when not checked."""
    ps = paper_score(paper, dataset)
    if ps is None:
        return "—"
    cell = f"{ps['mean']:.1f}" if ps["std"] is None else f"{ps['mean']:.1f} ± {ps['std']:.1f}"
    return cell if paper["source"]["checked"] else "≈" + cell


@dataclass
class GroupStats:
    """The report's numbers for one group of runs (one config, several seeds)."""

    dataset: str
    label: str  # the config fields that differ between the reported groups, "" if none
    config: dict[str, Any]
    seeds: list[Any]
    n_runs: int
    n_finished: int  # runs whose summary.json says "completed"
    statuses: list[str]  # per run: "completed", "interrupted", "no summary", ... (see Run.status)
    n_scored: int  # runs with at least one evaluation (the n of the score statistics)
    last_score_mean: float | None
    last_score_std: float | None
    best_score_mean: float | None
    best_score_std: float | None
    updates_mean: float
    wall_time_s_mean: float | None
    run_dirs: list[str]


def mean_std(values: Sequence[float], ddof: int = STD_DDOF) -> tuple[float | None, float | None]:
    """(mean, std) of `values` with the given ddof; (None, None) when too few values."""
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n - ddof <= 0:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (n - ddof)
    return mean, math.sqrt(var)


def summarise(groups: Sequence[Group]) -> list[GroupStats]:
    """The statistics of each group, in the groups' order."""
    fields = differing_fields(groups)
    out = []
    for g in groups:
        last = [s for s in (r.last_score for r in g.runs) if s is not None]
        best = [s for s in (r.best_score for r in g.runs) if s is not None]
        walls = [w for w in (r.wall_time_s for r in g.runs) if w is not None]
        last_mean, last_std = mean_std(last)
        best_mean, best_std = mean_std(best)
        out.append(
            GroupStats(
                dataset=g.dataset,
                label=group_label(g, fields, with_dataset=False),
                config=g.config,
                seeds=g.seeds,
                n_runs=len(g.runs),
                n_finished=sum(r.finished for r in g.runs),
                statuses=[r.status for r in g.runs],
                n_scored=len(last),
                last_score_mean=last_mean,
                last_score_std=last_std,
                best_score_mean=best_mean,
                best_score_std=best_std,
                updates_mean=math.fsum(r.total_updates for r in g.runs) / len(g.runs),
                wall_time_s_mean=math.fsum(walls) / len(walls) if walls else None,
                run_dirs=[str(r.path) for r in g.runs],
            )
        )
    return out


def _fmt_score(mean: float | None, std: float | None, n: int, n_runs: int) -> str:
    if mean is None:
        return "—"
    s = f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}"
    return s if n == n_runs else f"{s} (n={n})"


def _fmt_updates(u: float) -> str:
    return f"{u:,.0f}" if float(u).is_integer() else f"{u:,.1f}"


def format_duration(seconds: float | None) -> str:
    """3725.0 -> "1h 02m 05s", 95 -> "1m 35s", 4.2 -> "4.2s"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def to_markdown(stats: Sequence[GroupStats], paper: dict[str, Any] | None = None) -> str:
    """A markdown table with a one-line note on the score and the std convention; with `paper`
    (load_paper()), a "paper RAVL" column ("—" where the paper has no number) and its source."""
    header = [
        "dataset",
        "config",
        "seeds",
        "last score",
        "best score",
        "updates (mean)",
        "wall time (mean)",
    ]
    if paper is not None:
        header.insert(5, "paper RAVL")
    rows = []
    for s in stats:
        seeds = str(s.n_runs)
        if s.n_finished < s.n_runs:  # e.g. "3 (1 interrupted, 1 no summary)"
            counts = Counter(st for st in s.statuses if st != "completed")
            seeds += " (" + ", ".join(f"{n} {st}" for st, n in sorted(counts.items())) + ")"
        rows.append(
            [
                s.dataset,
                s.label or "—",
                seeds,
                _fmt_score(s.last_score_mean, s.last_score_std, s.n_scored, s.n_runs),
                _fmt_score(s.best_score_mean, s.best_score_std, s.n_scored, s.n_runs),
                _fmt_updates(s.updates_mean),
                format_duration(s.wall_time_s_mean),
            ]
        )
        if paper is not None:
            rows[-1].insert(5, _fmt_paper(paper, s.dataset))
    lines = [SCORE_NOTE, ""]
    if paper is not None:
        lines[1:1] = [_paper_note(paper)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = [
    "dataset",
    "config",
    "n_seeds",
    "seeds",
    "n_finished",
    "n_scored",
    "last_score_mean",
    "last_score_std_ddof0",
    "best_score_mean",
    "best_score_std_ddof0",
    "updates_mean",
    "wall_time_s_mean",
]


def _paper_note(paper: dict[str, Any]) -> str:
    src = paper["source"]
    note = (
        f"Paper RAVL: {src['paper']} ({src['version']}), {src['table']}, {src['units']}, "
        f"{src['seeds']}."
    )
    if not src["checked"]:
        note += " ≈: not checked against the paper's table."
    return note


def to_csv(stats: Sequence[GroupStats], paper: dict[str, Any] | None = None) -> str:
    """CSV, one row per group. The std columns are named for their convention (ddof=0). With
    `paper`, two more columns: paper_ravl_mean, paper_ravl_std (empty where the file has none)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS + (["paper_ravl_mean", "paper_ravl_std"] if paper is not None else []))
    for s in stats:
        extra: list[str] = []
        if paper is not None:
            ps = paper_score(paper, s.dataset)
            extra = ["", ""] if ps is None else [repr(ps["mean"]), _repr_or_empty(ps["std"])]
        w.writerow(
            [
                s.dataset,
                s.label,
                s.n_runs,
                " ".join(str(x) for x in s.seeds),
                s.n_finished,
                s.n_scored,
                *("" if v is None else repr(float(v)) for v in _score_values(s)),
                repr(float(s.updates_mean)),
                "" if s.wall_time_s_mean is None else repr(float(s.wall_time_s_mean)),
                *extra,
            ]
        )
    return buf.getvalue()


def _repr_or_empty(v: float | None) -> str:
    return "" if v is None else repr(v)


def _score_values(s: GroupStats) -> list[float | None]:
    return [s.last_score_mean, s.last_score_std, s.best_score_mean, s.best_score_std]


def to_json(stats: Sequence[GroupStats], paper: dict[str, Any] | None = None) -> str:
    """JSON: {"score": ..., "std": ..., "groups": [GroupStats as an object, ...]}. With `paper`,
    also "paper_source" and per group "paper_ravl": {"mean", "std"} or null."""
    doc: dict[str, Any] = {
        "score": "D4RL normalised score, 100 * (return - random) / (expert - random)",
        "std": STD_NAME,
        "groups": [asdict(s) for s in stats],
    }
    if paper is not None:
        doc["paper_source"] = paper["source"]
        for g, s in zip(doc["groups"], stats, strict=True):
            g["paper_ravl"] = paper_score(paper, s.dataset)
    return json.dumps(doc, indent=2, default=str) + "\n"


def render(stats: Sequence[GroupStats], fmt: str, paper: dict[str, Any] | None = None) -> str:
    """The report in `fmt` (one of FORMATS), with the paper's column when `paper` is given."""
    if fmt == "markdown":
        return to_markdown(stats, paper)
    if fmt == "csv":
        return to_csv(stats, paper)
    if fmt == "json":
        return to_json(stats, paper)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
