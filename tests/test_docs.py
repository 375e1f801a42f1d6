"""The README and docs/ say what the project does: every runnable command in them works,
every link resolves, and the pipeline diagrams match dvc.yaml.

A fenced block marked `sh` (or `bash`, `shell`) holds commands a reader may paste; each
one is checked here, run for real when it is quick and harmless (`cxrstn --version`,
`cxrstn doctor`, `cxrstn profile-args ...`), else through its `--help` (which fails on an
unknown subcommand) plus what can be checked without running it: a `make` target exists,
a `dvc exp run -S key=value` names a real parameter. Blocks marked `text` are output,
diagrams or synopses and are not run.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import load_bench

from cxrstn.io import flatten

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"sh", "bash", "shell"}
BIN = Path(sys.executable).parent


def fenced_blocks(page: Path) -> list[tuple[str, int, list[str]]]:
    """(info string, line number of the opening fence, lines) of every fenced block."""
    blocks, info, start, lines = [], None, 0, []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if info is None:
                info, start, lines = line[3:].strip(), number, []
            else:
                blocks.append((info, start, lines))
                info = None
        elif info is not None:
            lines.append(line)
    assert info is None, f"{page}: the block opened at line {start} is never closed"
    return blocks


def commands(page: Path) -> list[tuple[str, str]]:
    """(where, command) for every command of the page's runnable blocks: comments dropped,
    `a && b` and `a; b` split, `$(...)` kept as one word of its command."""
    found = []
    for info, start, lines in fenced_blocks(page):
        if info not in RUNNABLE:
            continue
        for offset, line in enumerate(lines, 1):
            code = re.sub(r"\s+#.*$", "", line).strip()
            for part in re.split(r"\s*(?:&&|;)\s*", code):
                if part:
                    found.append((f"{page.name}:{start + offset}", part))
    return found


ALL_COMMANDS = [pair for page in PAGES for pair in commands(page)]


def test_every_page_has_its_runnable_commands_marked():
    """An unmarked block is invisible to these checks: each must say sh or text."""
    for page in PAGES:
        for info, start, _ in fenced_blocks(page):
            assert info in RUNNABLE | {"text"}, f"{page.name}:{start}: mark the block sh or text"
    assert len(ALL_COMMANDS) >= 15


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, **kw)


@functools.cache
def help_works(*words: str) -> bool:
    return run([*words, "--help"], timeout=120).returncode == 0


@functools.cache
def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


@functools.cache
def parameters() -> set[str]:
    return set(flatten(yaml.safe_load((ROOT / "params.yaml").read_text())))


def check_dvc(words: list[str]) -> None:
    words = [w for w in words if w != "--wait-for-lock"]
    sub = [w for w in words[1:3] if re.fullmatch(r"[a-z]+", w)]
    if words[1:2] == ["exp"]:
        sub = words[1:3]
    assert help_works("dvc", *sub), f"dvc {' '.join(sub)}: no such command"
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "-S":
            key = value.split("=", 1)[0]
            assert key in parameters(), f"-S {key}: no such parameter in params.yaml"
        if value.startswith("$(") and value.endswith(")"):
            inner = shlex.split(value[2:-1])
            assert inner[0] == "cxrstn", value
            result = run(inner, timeout=120)
            assert result.returncode == 0 and result.stdout.startswith("-S "), result.stderr


def check(command: str) -> None:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    program = words[0]
    if program == "cxrstn":
        sub = words[1] if len(words) > 1 else ""
        if sub in ("--version", "paper-args", "profile-args"):
            result = run(words, timeout=120)
            assert result.returncode == 0, result.stderr
        elif sub == "doctor":
            result = run(words, timeout=120)
            assert result.returncode in (0, 1) and "torch build" in result.stdout, result.stderr
        else:
            assert help_works("cxrstn", sub), f"cxrstn {sub}: no such command"
    elif program == "dvc":
        check_dvc(words)
    elif program == "make":
        targets = [w for w in words[1:] if "=" not in w] or ["setup"]
        assert set(targets) <= make_targets(), f"make {targets}: no such target"
    elif program in ("python", "python3"):
        target = words[1:3] if words[1] == "-m" else words[1:2]
        assert help_works(sys.executable, *target), f"{command}: --help fails"
    elif program == "git":
        # git's usage text exits 129 for a real subcommand, 1 for an unknown one
        assert run(["git", words[1], "-h"]).returncode == 129, f"git {words[1]}: no such command"
    else:
        raise AssertionError(f"no rule to check `{program}`: add one to tests/test_docs.py")


@pytest.mark.parametrize(("where", "command"), ALL_COMMANDS, ids=[w for w, _ in ALL_COMMANDS])
def test_each_runnable_command_works(where, command):
    check(command)


def test_the_checks_catch_a_wrong_command():
    for wrong in (
        "cxrstn predcit films/",
        "make tests",
        "dvc exp run -S stn.sy_inti=0.1",
        "dvc metrix show",
        "git chekout params.yaml",
        "rm -rf data",
    ):
        with pytest.raises(AssertionError):
            check(wrong)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def overview_script():
    return load_bench("overview_figure")


def test_every_relative_link_resolves():
    """In a fresh clone: the README's figure and reports/table2.md are in git."""
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name}: link to {target}, which does not exist"


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert readme.index("docs/figures/overview.png") < readme.index("## Quick start")
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"
    assert "lent" not in readme
    # The results section opens with the verdict, then Table II, both written from reports/.
    results = readme.index("## Results")
    assert (
        results
        < readme.index("<!-- NUMBERS:verdict:BEGIN")
        < readme.index("<!-- NUMBERS:table2:BEGIN")
    )
    verdict = readme.split("<!-- NUMBERS:verdict:END")[0].split("-->\n")[-1].strip()
    assert verdict.startswith("**On the default run") and verdict.count(". ") == 0


def paragraphs(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each prose paragraph: not code, tables, lists, markers
    or headings."""
    found, current, start, fenced = [], [], 0, False
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if line.startswith("```"):
            fenced = not fenced
        prose = (
            not fenced
            and line.strip()
            and not line.startswith(("```", "|", "#", "<!--", "- ", "  ", "![", "1. "))
        )
        if prose:
            start = start or number
            current.append(line)
        elif current:
            found.append((start, current))
            current, start = [], 0
    return found


def test_no_readme_paragraph_is_longer_than_ten_lines():
    for start, lines in paragraphs((ROOT / "README.md").read_text()):
        assert len(lines) <= 10, f"README.md:{start}: a paragraph of {len(lines)} lines"
        assert all(len(line) <= 100 for line in lines), f"README.md:{start}: a line over 100"


def test_the_paragraph_check_sees_a_long_paragraph():
    text = "# t\n\n" + "word\n" * 11 + "\n| a |\n" + "```sh\n" + "x\n" * 12 + "```\n"
    assert [len(lines) for _, lines in paragraphs(text)] == [11]


MARKS = ("paper:", "authors' code", "not in the paper")
"""Every value of params.paper.yaml says where it comes from: the paper's text ("paper:
..."), the authors' published code, or neither."""


def unmarked_values(text: str) -> list[str]:
    """'line N: key' for each value (a key with something after its colon) whose comment
    carries none of MARKS, or that has no comment."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"\s*([A-Za-z_][\w]*):\s*([^#\s][^#]*?)?\s*(#.*)?$", line)
        if not match or match[2] is None:
            continue  # a comment, a blank line or a section
        comment = match[3] or ""
        if not any(mark in comment for mark in MARKS):
            problems.append(f"line {number}: {match[1]}")
    return problems


def test_each_value_of_the_paper_profile_says_where_it_comes_from():
    assert unmarked_values((ROOT / "params.paper.yaml").read_text()) == []


def test_the_mark_check_sees_an_unmarked_value():
    text = (
        "classifier:\n"
        "  epochs: 20  # training epochs (paper: 20)\n"
        "  lr: 1.0e-5  # Adam learning rate\n"
        "  batch_size: 16\n"
        "  norm: none  # the authors' code: no batch norm\n"
        "  weights: null  # from scratch (not in the paper)\n"
    )
    assert unmarked_values(text) == ["line 3: lr", "line 4: batch_size"]


ARROW = "─►"


def diagram_edges(page: Path) -> list[tuple[str, str]]:
    """(upstream, downstream) stage pairs of the page's pipeline diagram (the text block
    that draws arrows), with `name@0..4` expanded to each fold."""

    def stages(field: str) -> list[str]:
        names = []
        for name in (n.strip() for n in field.split(",")):
            match = re.fullmatch(r"(\w+)@(\d+)\.\.(\d+)", name)
            if match:
                first, last = int(match[2]), int(match[3])
                names += [f"{match[1]}@{k}" for k in range(first, last + 1)]
            else:
                names.append(name)
        return names

    (block,) = [lines for info, _, lines in fenced_blocks(page) if any(ARROW in x for x in lines)]
    edges = []
    for line in block:
        fields = [stages(field) for field in line.split(ARROW)]
        for before, after in zip(fields, fields[1:], strict=False):
            edges += [(a, b) for a in before for b in after if same_fold(a, b)]
    return edges


def same_fold(a: str, b: str) -> bool:
    """Fold k of one training stage feeds fold k of the next (`train_stn@k` reads
    `models/baseline/fold<k>`); a stage without folds meets every fold."""
    return "@" not in a or "@" not in b or a.split("@")[1] == b.split("@")[1]


@functools.cache
def upstream_stages() -> dict[str, set[str]]:
    from cxrstn.parallel import stage_graph

    return stage_graph(ROOT)[1]


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md"])
def test_the_pipeline_diagram_draws_real_dependencies(page):
    upstream = upstream_stages()
    edges = diagram_edges(ROOT / page)
    for before, after in edges:
        assert after in upstream, f"{page}: no stage {after}"
        assert before in upstream[after], f"{page}: {after} does not depend on {before}"
    assert ("shortcut", "report") in edges
    drawn = {stage for edge in edges for stage in edge}
    assert drawn == set(upstream), f"{page}: stages missing {set(upstream) - drawn}"


def test_overview_figure_puts_the_two_figures_side_by_side(tmp_path):
    from PIL import Image

    compose = overview_script().compose
    Image.new("RGB", (600, 400), "red").save(tmp_path / "roc.png")
    Image.new("RGB", (900, 300), "blue").save(tmp_path / "roi.png")
    size = compose(tmp_path / "roc.png", tmp_path / "roi.png", tmp_path / "o.png", width=700)
    image = Image.open(tmp_path / "o.png").convert("RGB")
    assert image.size == size and size[0] == 700
    assert image.getpixel((5, size[1] // 2))[0] > 200  # the ROC panel on the left
    assert image.getpixel((size[0] - 5, size[1] // 2))[2] > 200  # the ROI panel on the right
    with pytest.raises(FileNotFoundError, match="nope.png: figure not found"):
        compose(tmp_path / "nope.png", tmp_path / "roi.png", tmp_path / "p.png")
