"""dvc.yaml against the code: every package module a stage runs is one of its deps, and the
fold list is the one `split.folds` implies.

A stage's modules are found by following its script's imports inside the package,
transitively and including imports inside functions (a stage may call them). Importing
`a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too, so those count as well.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cxrstn"


def module_file(name: str) -> Path | None:
    """The file of a dotted module name inside the package, or None if it is not ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Dotted names a file imports anywhere in it; `from m import x` gives m and m.x."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                package = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                module = ".".join(package + ((node.module,) if node.module else ()))
            else:
                module = node.module
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def modules_run_by(script: Path) -> set[Path]:
    """Every package file that running `script` can execute, as paths relative to ROOT."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for name in imported_names(path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # parent packages run their __init__
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return {p.relative_to(ROOT) for p in seen}


def covered(module: Path, deps: list[str]) -> bool:
    """A dep covers a module when it is the module's file or a folder above it."""
    return any(module == Path(dep) or Path(dep) in module.parents for dep in deps)


def stage_templates(pipeline: dict) -> dict[str, dict]:
    """Stage name to definition; a foreach stage is checked through its `do` template."""
    return {
        name: stage["do"] if "foreach" in stage else stage
        for name, stage in pipeline["stages"].items()
    }


def script_of(stage: dict) -> Path:
    words = [w for w in stage["cmd"].split() if w.startswith("stages/") and w.endswith(".py")]
    assert len(words) == 1, f"cannot find the stage script in {stage['cmd']!r}"
    return ROOT / words[0]


def missing_deps(pipeline: dict) -> list[str]:
    problems = []
    for name, stage in stage_templates(pipeline).items():
        script = script_of(stage)
        deps = [str(d) for d in stage.get("deps", [])]
        if str(script.relative_to(ROOT)) not in deps:
            problems.append(f"stage {name}: its script {script.relative_to(ROOT)} is not a dep")
        for module in sorted(modules_run_by(script)):
            if not covered(module, deps):
                problems.append(f"stage {name}: runs {module} but it is not in its deps")
    return problems


def unused_deps(pipeline: dict) -> list[str]:
    """Package files listed as deps that the stage never runs: they only cause re-runs."""
    problems = []
    for name, stage in stage_templates(pipeline).items():
        run = modules_run_by(script_of(stage))
        for dep in stage.get("deps", []):
            dep = Path(str(dep))
            if dep.parts[0] != PACKAGE:
                continue
            if not any(module == dep or dep in module.parents for module in run):
                problems.append(f"stage {name}: lists {dep} but never runs it")
    return problems


@pytest.fixture(scope="module")
def pipeline() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_module_a_stage_runs_is_a_dep(pipeline):
    assert missing_deps(pipeline) == []


def test_no_stage_lists_a_module_it_never_runs(pipeline):
    assert unused_deps(pipeline) == []


def test_a_removed_dep_is_reported_by_stage_and_module(pipeline):
    stages = pipeline["stages"]
    stages["binarize"]["deps"].remove("cxrstn/labels.py")
    assert "stage binarize: runs cxrstn/labels.py but it is not in its deps" in missing_deps(
        pipeline
    )


def test_function_level_and_parent_package_imports_count(tmp_path, monkeypatch):
    # detector.py imports ultralytics only inside functions; the test package's own
    # function-level imports must be followed the same way.
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from cxrstn.sources import chexpert\n")
    found = modules_run_by(script)
    assert Path("cxrstn/sources/chexpert.py") in found
    assert Path("cxrstn/sources/__init__.py") in found
    assert Path("cxrstn/__init__.py") in found


def test_fold_list_matches_split_folds():
    for name in ("params.yaml", "params.paper.yaml"):
        split = yaml.safe_load((ROOT / name).read_text())["split"]
        assert split["fold_ids"] == list(range(split["folds"])), (
            f"{name}: split.fold_ids must be 0..split.folds-1"
        )


def test_training_stages_take_their_folds_from_params(pipeline):
    # stn_eq (not in the paper) trains only where its own list names folds: none by
    # default, every fold in params.attention.yaml.
    own = {"train_stn_eq": "${split.stn_eq_fold_ids}"}
    for name, stage in pipeline["stages"].items():
        if name.startswith("train_") and name != "train_detector":
            assert stage["foreach"] == own.get(name, "${split.fold_ids}"), name


def entry_path(entry) -> str:
    """An out/metric/plot entry's path: a string, or the one key of a dict with options."""
    return entry if isinstance(entry, str) else next(iter(entry))


def stage_bodies(pipeline: dict) -> dict:
    return {name: stage.get("do", stage) for name, stage in pipeline["stages"].items()}


def test_every_stage_says_what_it_does(pipeline):
    for name, body in stage_bodies(pipeline).items():
        assert isinstance(body.get("desc"), str) and body["desc"].strip(), f"{name}: no desc"


def test_metrics_and_plot_data_are_kept_in_git(pipeline):
    """`cache: false`, so that `dvc metrics show` and `dvc plots diff` work in a fresh clone
    (and .gitignore lets exactly these files under reports/ into git)."""
    kept = []
    for name, body in stage_bodies(pipeline).items():
        for entry in body.get("metrics", []) + body.get("plots", []):
            assert isinstance(entry, dict), f"{name}: {entry} is cached, so not in git"
            options = next(iter(entry.values()))
            assert options.get("cache") is False, f"{name}: {entry_path(entry)} is cached"
            kept.append(entry_path(entry))
    assert {"reports/metrics.json", "reports/shortcut.json"} <= set(kept)
    evaluate = {entry_path(e): e for e in stage_bodies(pipeline)["evaluate"]["outs"]}
    for curve in ("reports/plots/roc.csv", "reports/plots/pr.csv"):
        assert evaluate[curve][curve]["cache"] is False


def test_the_report_stage_declares_every_figure_it_writes(pipeline):
    script = (ROOT / "stages" / "report.py").read_text()
    written = set(re.findall(r'"(reports/figures/[a-z_]+\.png)"', script))
    declared = {entry_path(e) for e in stage_bodies(pipeline)["report"]["outs"]}
    assert written and written <= declared, written - declared


def test_each_dataset_folder_is_walked_by_one_stage(pipeline):
    """DVC lists and stats every file of a folder dependency on every `dvc repro`, and a
    no-op's time is mostly such walks: the CheXpert folder (224,316 files for real data) is
    resize's alone, crop stands on the table of originals resize writes, and thorax_boxes
    reads the phantom's lung-mask sets, not its CheXpert part; no stage but phantom itself
    lists the whole phantom folder."""
    deps = {
        name: [str(d) for d in body.get("deps", [])]
        for name, body in stage_bodies(pipeline).items()
    }
    assert [name for name, d in deps.items() if "${data.chexpert}" in d] == ["resize"]
    assert "data/originals.csv" in stage_bodies(pipeline)["resize"]["outs"]
    assert "data/originals.csv" in deps["crop"] and "data/originals.csv" in deps["shortcut"]
    assert not [name for name, d in deps.items() if "data/phantom" in d]
    phantom_dirs = [d for d in deps["thorax_boxes"] if d.startswith("data/phantom")]
    assert phantom_dirs and not any("CheXpert" in d or d == "data/phantom" for d in phantom_dirs)
    stage = (ROOT / "stages" / "thorax_boxes.py").read_text()
    assert "chexpert" not in stage.lower()  # it never reads the part it does not depend on
