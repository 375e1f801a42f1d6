"""End to end: the DVC pipeline on a tiny phantom, in a throw-away copy of the project.

One run of the whole pipeline, with every setting (stn_eq included, as the attention profile
runs it), feeds every assertion (fresh repro, no-op repro, and experiments that change one
parameter each), so the DVC behaviour users rely on is tested through DVC itself.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cxrstn.settings import SETTINGS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SKIP = {
    ".venv",
    ".git",
    "data",
    "models",
    "reports",
    "checkpoints",
    ".cache",
    ".pytest_cache",
    ".ruff_cache",
    "tmp",
    "cache",
}

TINY = {
    "phantom": {
        "chexpert_patients": 60,
        "jsrt_images": 6,
        "montgomery_images": 6,
        "shenzhen_images": 6,
        "workers": 1,
    },
    "resize": {"size": 64, "workers": 1},
    # Three folds: the fold count is a parameter, and a smaller run is a faster test. And
    # stn_eq on each, as params.attention.yaml runs it: every setting, end to end.
    "split": {"folds": 3, "fold_ids": [0, 1, 2], "stn_eq_fold_ids": [0, 1, 2]},
    "detector": {"epochs": 1, "imgsz": 64, "batch": 4, "nbs": 4},
    # A one-epoch detector is not confident: keep low-confidence images whole.
    "crop": {"low_conf": "full", "batch": 16},
    "classifier": {"width": 0.0625, "input_size": 32, "epochs": 2, "batch_size": 16},
    "stn": {"loc_size": 32},
    "train": {"threads": 1},
}
FOLDS = range(3)
STN_RUNS = {f"train_stn@{k}" for k in FOLDS}
YOLO_RUNS = {f"train_yolo@{k}" for k in FOLDS}


def _network_can_be_cut():
    return (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    )


# The first run has no network at all: the pipeline must neither need nor wait for one.
NO_NETWORK = ["unshare", "-n"] if _network_can_be_cut() else []


def ran_stages(log):
    return set(re.findall(r"Running stage '([^']+)'", log))


def run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def deep_update(base, update):
    for key, value in update.items():
        if isinstance(value, dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project with tiny params, run once with `dvc repro`."""
    dest = tmp_path_factory.mktemp("project")
    for item in ROOT.iterdir():
        if item.name in SKIP:
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=shutil.ignore_patterns(*SKIP))
        else:
            shutil.copy2(item, dest / item.name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(params, TINY), sort_keys=False))

    home = dest / "home"
    home.mkdir()
    env = os.environ | {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dest),
        "DVC_SITE_CACHE_DIR": str(dest / ".cache" / "dvc"),
        "DVC_GLOBAL_CONFIG_DIR": str(dest / ".cache" / "dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "snapshot"], dest, env)
    start = time.perf_counter()
    log = run([*NO_NETWORK, "dvc", "repro"], dest, env)
    return {"dir": dest, "env": env, "log": log, "seconds": time.perf_counter() - start}


def test_fresh_repro_writes_every_output(project):
    d = project["dir"]
    labels = pd.read_csv(d / "data/labels.csv")
    folds = pd.read_csv(d / "data/folds.csv")
    assert len(labels) > 20
    assert set(folds["path"]) <= set(labels["path"])
    assert folds.groupby("patient")["fold"].nunique().max() == 1
    assert (d / "data/resized/images.npy").is_file()
    assert (d / "reports/figures/phantom_contact_sheet.png").stat().st_size > 0


def test_second_repro_does_nothing(project):
    start = time.perf_counter()
    log = run(["dvc", "repro"], project["dir"], project["env"])
    assert "Running stage" not in log
    assert time.perf_counter() - start < 30


def test_every_stage_ran_offline_and_wrote_nothing_outside(project):
    assert {
        "phantom",
        "binarize",
        "resize",
        "split",
        "thorax_boxes",
        "train_detector",
        "crop",
        "evaluate",
        "report",
    } | STN_RUNS <= ran_stages(project["log"])
    assert list((project["dir"] / "home").iterdir()) == []
    assert not (project["dir"] / "dvclive").exists()
    assert not (project["dir"] / "runs").exists()


def test_outputs_of_later_stages(project):
    d = project["dir"]
    crops = pd.read_csv(d / "data/crops.csv")
    assert list(crops.columns) == ["path", "x0", "y0", "x1", "y1", "conf", "status"]
    assert set(crops["status"]) <= {"cropped", "whole"}
    assert set(json.loads((d / "reports/detector.json").read_text())) >= {
        "map50",
        "map50_95",
        "precision",
        "recall",
    }
    for setting in SETTINGS:
        for fold in FOLDS:
            run_dir = d / f"reports/runs/{setting}/fold{fold}"
            predictions = pd.read_csv(run_dir / "predictions.csv")
            assert set(predictions["split"]) == {"val", "test"}
            assert (d / f"models/{setting}/fold{fold}/model.pt").is_file()
    metrics = json.loads((d / "reports/metrics.json").read_text())
    assert set(metrics) == {*SETTINGS, "paired"}
    # DeLong's paired test for every pair of settings, once
    assert len(metrics["paired"]) == len(SETTINGS) * (len(SETTINGS) - 1) // 2
    assert {"baseline_vs_stn", "baseline_vs_yolo", "yolo_vs_stn", "stn_vs_stn_eq"} <= set(
        metrics["paired"]
    )
    for setting in (metrics[s] for s in SETTINGS):
        rates = [setting[k]["mean"] for k in ("tp_rate", "fp_rate", "tn_rate", "fn_rate")]
        assert sum(rates) == pytest.approx(100, abs=0.01)
    html = (d / "reports/report.html").read_text()
    assert "Table II" in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)  # readable offline


def test_dvc_sees_the_curves_and_each_runs_metrics(project):
    d, env = project["dir"], project["env"]
    plots = json.loads(run(["dvc", "plots", "show", "--json"], d, env))["data"]
    assert {"Mean ROC over the test folds", "Mean precision-recall over the test folds"} <= set(
        plots
    )
    for setting in SETTINGS:
        curve = f"reports/runs/{setting}/fold0/live/plots/metrics/val/auc.tsv"
        assert curve in plots
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], d, env))
    files = next(iter(shown.values()))["data"]
    assert {f"reports/runs/{s}/fold{k}/metrics.json" for s in ("stn", "yolo") for k in FOLDS} <= (
        set(files)
    )
    roc = pd.read_csv(d / "reports/plots/roc.csv")
    assert list(roc.columns) == ["fpr", *SETTINGS]
    assert roc["fpr"].iloc[0] == 0 and roc["fpr"].iloc[-1] == 100


def test_detector_and_crops_are_deterministic(project):
    d, env = project["dir"], project["env"]
    before = [(d / f).read_bytes() for f in ("models/detector.pt", "data/crops.csv")]
    run(["dvc", "repro", "--force", "--single-item", "train_detector", "crop"], d, env)
    after = [(d / f).read_bytes() for f in ("models/detector.pt", "data/crops.csv")]
    assert before == after


def test_stn_parameter_reruns_only_the_stn_and_what_follows(project):
    log = run(["dvc", "exp", "run", "-S", "stn.sy_init=0.2"], project["dir"], project["env"])
    assert ran_stages(log) == STN_RUNS | {"evaluate", "shortcut", "report"}


def test_crop_threshold_reruns_only_the_crop_and_what_uses_it(project):
    d, env = project["dir"], project["env"]
    outputs = ("data/crops.csv", "data/crops/images.npy", "data/crops/index.csv")
    before = [(d / f).read_bytes() for f in outputs]
    log = run(["dvc", "exp", "run", "-S", "crop.conf=0.0"], d, env)
    after = [(d / f).read_bytes() for f in outputs]
    crops = pd.read_csv(d / "data/crops.csv")
    # at conf 0 every image the detector finds a box on is cropped
    assert (crops["status"] == "cropped").sum() == crops["x0"].notna().sum()
    # the yolo runs read the crop images; the report also reads the table
    images_changed, table_changed = before[1:] != after[1:], before[0] != after[0]
    expected = {"crop"} | (YOLO_RUNS | {"evaluate"} if images_changed else set())
    expected |= {"shortcut", "report"} if images_changed or table_changed else set()
    assert ran_stages(log) == expected


def test_the_default_run_leaves_stn_eq_out_and_reruns_only_what_compares(project):
    d, env = project["dir"], project["env"]
    log = run(["dvc", "exp", "run", "-S", "split.stn_eq_fold_ids=[]"], d, env)
    assert ran_stages(log) == {"evaluate", "shortcut", "report"}
    three = ["baseline", "yolo", "stn"]
    metrics = json.loads((d / "reports/metrics.json").read_text())
    assert set(metrics) == {*three, "paired"}
    assert set(metrics["paired"]) == {"baseline_vs_stn", "baseline_vs_yolo", "yolo_vs_stn"}
    assert list(pd.read_csv(d / "reports/plots/roc.csv").columns) == ["fpr", *three]
    assert set(json.loads((d / "reports/shortcut.json").read_text())) == set(three)
    html = (d / "reports/report.html").read_text()
    assert "split.stn_eq_fold_ids is []: params.attention.yaml runs it" in html
