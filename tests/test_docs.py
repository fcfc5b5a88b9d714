"""The repository explains itself: what the docs name exists, and nothing points outside."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").rglob("*.md"))]
PATH_RE = re.compile(
    r"(?<![\w./-])((?:eor|kernels|csrc|benchmarks|docs|tests)/[\w./-]*\w)(?![<\w./-])"
)
NAME_RE = re.compile(r"(?<![\w./])(eor(?:\.[A-Za-z_]\w*)+)")


def _resolve(dotted: str) -> bool:
    """Whether `eor.a.b.c` is a module, or an attribute path below one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_the_docs_exist() -> None:
    assert (ROOT / "docs" / "algorithm.md").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_and_names_in_docs_exist(doc: Path) -> None:
    text = doc.read_text()
    missing_paths = sorted(
        {
            p
            for p in PATH_RE.findall(text)
            # eor/x.hpp is an #include of the header-only core, under csrc/include
            if not (ROOT / p).exists() and not (ROOT / "csrc" / "include" / p).exists()
        }
    )
    missing_names = sorted({n for n in NAME_RE.findall(text) if not _resolve(n.rstrip("."))})
    assert not missing_paths, f"{doc.name} names paths that do not exist: {missing_paths}"
    assert not missing_names, f"{doc.name} names eor objects that do not exist: {missing_names}"


def test_nothing_points_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"SPEC\.md|\.\./shared|CONTRACTS\.md|\bSPEC (section )?\d")
    hits = []
    for name in files:
        path = ROOT / name
        if (
            path.suffix not in {".py", ".md", ".toml", ".cpp", ".hpp", ".txt", ""}
            or not path.is_file()
        ):
            continue
        if name == "tests/test_docs.py":
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                hits.append(f"{name}:{i}: {line.strip()}")
    assert not hits, "references to files outside the repository:\n" + "\n".join(hits)
