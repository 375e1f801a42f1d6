"""cxrstn.parallel: scheduling order, and through DVC on a tiny project: stages run side by
side give what one after another gives, and a DVC remote serves the results to a clone."""

import json
import os
import shutil
import subprocess
import sys
from graphlib import CycleError
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from cxrstn.io import load_params
from cxrstn.parallel import (
    by_priority,
    default_jobs,
    downstream_counts,
    needed,
    run_parallel,
    slots_of,
)

ROOT = Path(__file__).resolve().parents[1]

# a -> b -> d, a -> c -> d, e alone (an edge means "depends on": b depends on a)
UPSTREAM = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": set()}


def test_needed_follows_dependencies_transitively():
    assert needed(["d"], UPSTREAM) == {"a", "b", "c", "d"}
    assert needed(["b", "e"], UPSTREAM) == {"a", "b", "e"}
    with pytest.raises(ValueError, match=r"unknown stages \['x'\]"):
        needed(["x"], UPSTREAM)


def test_default_jobs_divide_the_cores_by_the_threads_of_a_training_stage():
    def params(train, detector):
        return {"train": {"threads": train}, "detector": {"threads": detector}}

    assert default_jobs(params(2, 2), cores=2) == 1  # one two-thread stage fills 2 cores
    assert default_jobs(params(1, 2), cores=2) == 2  # the one detector stage shares them
    # the shipped default: one single-thread training stage per core
    assert default_jobs(load_params(Path(__file__).parents[1] / "params.yaml"), cores=16) == 16
    assert default_jobs(params(0, 1), cores=16) == 1  # 0 = all cores
    assert default_jobs(params(4, 4), cores=2) == 1  # never fewer than one


def test_downstream_counts_and_ready_order():
    counts = downstream_counts(UPSTREAM)
    assert counts == {"a": 3, "b": 1, "c": 1, "d": 0, "e": 0}
    order = ["e", "a", "b", "c", "d"]
    assert by_priority(["e", "a"], order, counts) == ["a", "e"]  # a has more below
    assert by_priority(["c", "b"], order, counts) == ["b", "c"]  # a tie: dvc.yaml's order


def test_a_cycle_is_refused_before_anything_starts(tmp_path, monkeypatch):
    import cxrstn.parallel

    cycle = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(cxrstn.parallel, "stage_graph", lambda root: (["a", "b"], cycle))
    monkeypatch.setattr(cxrstn.parallel.subprocess, "Popen", None)  # nothing may start
    with pytest.raises(CycleError):
        run_parallel(1, root=tmp_path)


def test_the_detector_takes_the_slots_its_threads_fill():
    def params(train, detector):
        return {"train": {"threads": train}, "detector": {"threads": detector}}

    shipped = load_params(ROOT / "params.yaml")
    assert slots_of("train_detector", shipped, jobs=2, cores=2) == 2  # alone on 2 cores
    assert slots_of("train_detector", shipped, jobs=16, cores=16) == 2
    assert slots_of("train_baseline@0", shipped, jobs=2, cores=2) == 1
    assert slots_of("train_detector", params(1, 0), jobs=4, cores=4) == 4  # 0 = all cores
    assert slots_of("train_detector", params(2, 2), jobs=2, cores=4) == 1
    assert slots_of("train_detector", params(1, 8), jobs=2, cores=8) == 2  # at most all


class _FakeProcess:
    """A stage that ends on its third poll, and the stages running beside it when it began."""

    running: set = set()
    beside: dict = {}

    def __init__(self, command, cwd, env, stdout, stderr):
        self.stage, self.polls, self.returncode = command[-1], 0, None
        _FakeProcess.beside[self.stage] = set(_FakeProcess.running)
        _FakeProcess.running.add(self.stage)
        stdout.write(f"Running stage '{self.stage}'")

    def poll(self):
        self.polls += 1
        if self.polls < 3:
            return None
        _FakeProcess.running.discard(self.stage)
        self.returncode = 0
        return 0


def test_a_wide_stage_runs_alone_and_nothing_overtakes_it(tmp_path, monkeypatch):
    import cxrstn.parallel

    # data -> train_detector (2 slots) -> crop; data -> x, y (one slot each)
    upstream = {
        "data": set(),
        "train_detector": {"data"},
        "crop": {"train_detector"},
        "x": {"data"},
        "y": {"data"},
    }
    order = list(upstream)
    monkeypatch.setattr(cxrstn.parallel, "stage_graph", lambda root: (order, upstream))
    monkeypatch.setattr(cxrstn.parallel.subprocess, "Popen", _FakeProcess)
    monkeypatch.setattr(cxrstn.parallel.time, "sleep", lambda seconds: None)
    _FakeProcess.running, _FakeProcess.beside = set(), {}
    params = {"train": {"threads": 1}, "detector": {"threads": 2}}
    results = run_parallel(2, root=tmp_path, params=params)
    assert set(results) == set(upstream) and all(r["ran"] for r in results.values())
    assert _FakeProcess.beside["train_detector"] == set()  # alone: it has most downstream
    assert "train_detector" not in _FakeProcess.beside["x"] | _FakeProcess.beside["y"]
    # without params every stage takes one slot: x starts beside the detector
    _FakeProcess.running, _FakeProcess.beside = set(), {}
    run_parallel(2, root=tmp_path)
    assert _FakeProcess.beside["x"] == {"train_detector"}


# ---- through DVC ---------------------------------------------------------------------------

TOY = """
stages:
  a:
    cmd: sleep 1 && echo "$CUDA_VISIBLE_DEVICES" > a.txt
    outs: [a.txt]
  b:
    cmd: sleep 1 && echo "$CUDA_VISIBLE_DEVICES" > b.txt
    outs: [b.txt]
  c:
    cmd: cat a.txt b.txt > c.txt
    deps: [a.txt, b.txt]
    outs: [c.txt]
"""


def test_one_stage_per_gpu_then_nothing_to_do(tmp_path, monkeypatch):
    """Real DVC on a toy pipeline: a and b run at once, each on its own GPU; c after both."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site"))
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(tmp_path / "global"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    project = tmp_path / "toy"
    project.mkdir()
    subprocess.run(["dvc", "init", "-q", "--no-scm"], cwd=project, check=True)
    (project / "dvc.yaml").write_text(TOY)

    results = run_parallel(0, root=project, gpus=["5", "7"])
    assert list(results)[-1] == "c" and all(r["ran"] for r in results.values())
    gpus = {(project / f).read_text().strip() for f in ("a.txt", "b.txt")}
    assert gpus == {"5", "7"}  # side by side, never sharing a GPU
    assert (project / "c.txt").read_text().split() == [
        (project / "a.txt").read_text().strip(),
        (project / "b.txt").read_text().strip(),
    ]
    again = run_parallel(2, root=project)
    assert set(again) == {"a", "b", "c"} and not any(r["ran"] for r in again.values())


TINY = {
    "phantom": {
        "chexpert_patients": 40,
        "jsrt_images": 6,
        "montgomery_images": 6,
        "shenzhen_images": 6,
        "workers": 1,
    },
    "resize": {"size": 48, "workers": 1},
    "classifier": {"width": 0.0625, "input_size": 32, "epochs": 1, "batch_size": 16},
    "stn": {"loc_size": 32},
    "train": {"threads": 1, "workers": 0},
}
# Three classifier runs that need neither the detector nor each other: two run at once.
TARGETS = ["train_baseline@0", "train_baseline@1", "train_stn@0"]
SKIP = {".venv", ".git", "data", "models", "reports", "checkpoints", ".cache", "tmp", "cache"}
SKIP |= {".pytest_cache", ".ruff_cache", "dvclive"}


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _project(dest: Path) -> dict:
    dest.mkdir(parents=True)
    for item in ROOT.iterdir():
        if item.name in SKIP:
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=shutil.ignore_patterns(*SKIP))
        else:
            shutil.copy2(item, dest / item.name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {
        "HOME": str(dest.parent / "home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dest),
        "DVC_SITE_CACHE_DIR": str(dest.parent / "dvc-site"),
        "DVC_GLOBAL_CONFIG_DIR": str(dest.parent / "dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    (dest.parent / "home").mkdir(exist_ok=True)
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "snapshot"], dest, env)
    return env


def _results(project: Path) -> dict:
    """What must not depend on the schedule: data hashes, predictions, trained weights
    (the reports hold timings)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    hashes = {
        out["path"]: out["md5"]
        for name in ("phantom", "binarize", "resize", "split")
        for out in lock[name]["outs"]
        if out["path"].startswith("data/")
    }
    runs = {}
    for target in TARGETS:
        setting, fold = target.removeprefix("train_").split("@")
        predictions = pd.read_csv(project / f"reports/runs/{setting}/fold{fold}/predictions.csv")
        weights = torch.load(project / f"models/{setting}/fold{fold}/model.pt", weights_only=True)
        runs[target] = (predictions, weights["state_dict"])
    return {"hashes": hashes, "runs": runs}


@pytest.mark.slow
def test_parallel_equals_serial_and_a_remote_serves_a_clone(tmp_path):
    serial, parallel = tmp_path / "serial" / "p", tmp_path / "parallel" / "p"
    env_serial, env_parallel = _project(serial), _project(parallel)

    _run(["dvc", "repro", *TARGETS], serial, env_serial)
    command = [sys.executable, "-m", "cxrstn.parallel", "--jobs", "2", *TARGETS]
    log = _run(command, parallel, env_parallel)
    assert f"{len(TARGETS) + 4} of {len(TARGETS) + 4} stages ran, 2 at a time" in log

    one, two = _results(serial), _results(parallel)
    assert one["hashes"] == two["hashes"]
    for target in TARGETS:
        pd.testing.assert_frame_equal(one["runs"][target][0], two["runs"][target][0])
        for name, tensor in one["runs"][target][1].items():
            assert torch.equal(tensor, two["runs"][target][1][name]), (target, name)
    # dvc.lock is complete: DVC itself sees nothing left to do
    status = _run(["dvc", "status", "--json", *TARGETS], parallel, env_parallel)
    assert json.loads(status.strip().splitlines()[-1]) == {}

    # A team member pushes to a shared folder remote; a fresh clone pulls instead of running.
    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "-d", "team", str(remote)], parallel, env_parallel)
    _run(["dvc", "push", "--with-deps", *TARGETS], parallel, env_parallel)
    _run(["git", "add", "-A"], parallel, env_parallel)
    _run(["git", "commit", "-qm", "results and remote"], parallel, env_parallel)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(parallel), str(clone)], tmp_path, env_parallel)
    env_clone = env_parallel | {"PYTHONPATH": str(clone)}
    _run(["dvc", "pull", "--with-deps", *TARGETS], clone, env_clone)
    log = _run(["dvc", "repro", *TARGETS], clone, env_clone)
    assert "Running stage" not in log
    pulled = _results(clone)
    for target in TARGETS:
        pd.testing.assert_frame_equal(pulled["runs"][target][0], two["runs"][target][0])
