# ruff: noqa: E402
# The tests run the pipeline's code in this process: same tool folders and the same numpy
# kernels as a stage, so configure_tools() runs before numpy is imported.
from cxrstn.runtime import configure_tools

configure_tools()

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrstn.images import write_store
from cxrstn.settings import SETTINGS, ST_SETTINGS
from cxrstn.sources.chexpert import FINDINGS

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "real-samples"


def load_bench(name: str):
    """The script bench/<name>.py as a module (bench/ holds scripts, not a package). It is
    registered under its name, so that pool workers find its functions, and bench/ is on
    the path, so that it finds the scripts it imports."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def real_samples() -> Path:
    """The licensed real sample files beside the checkout; tests skip when absent."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip("../shared/real-samples is not present")
    return REAL_SAMPLES


@pytest.fixture
def run_stage(monkeypatch):
    """Run `stages/<name>.py` in `root` as DVC would, in this process (fast, debuggable)."""

    def run(name: str, root: Path, *args: str) -> None:
        monkeypatch.chdir(root)
        monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
        runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="__main__")

    return run


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def build_project(
    root: Path,
    with_yolo: bool = True,
    n_folds: int = 3,
    n_patients: int = 18,
    size: int = 64,
    seed: int = 0,
) -> None:
    """A project folder holding every input of evaluate and report, with random scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        for view in (1, 2):
            label = int(rng.random() < 0.7)
            findings = np.zeros(len(FINDINGS), dtype=int)
            if label:
                findings[rng.choice(len(FINDINGS), size=rng.integers(1, 3), replace=False)] = 1
            path = f"CheXpert-v1.0-small/train/patient{patient:05d}/study1/view{view}_frontal.jpg"
            rows.append([path, f"patient{patient:05d}", 1, label, *findings])
    labels = pd.DataFrame(rows, columns=["path", "patient", "study", "label", *FINDINGS])
    (root / "data").mkdir(parents=True)
    labels.to_csv(root / "data/labels.csv", index=False)
    fold_of = labels["patient"].str[-5:].astype(int) % n_folds
    labels[["path", "patient", "label"]].assign(fold=fold_of).to_csv(
        root / "data/folds.csv", index=False
    )
    yy, xx = np.mgrid[0:size, 0:size]
    thorax = ((xx - size / 2) / (0.35 * size)) ** 2 + ((yy - size / 2) / (0.3 * size)) ** 2 < 1
    images = [np.where(thorax, 90, 200).astype(np.uint8) + i % 40 for i in range(len(labels))]
    write_store(root / "data/resized", labels["path"].tolist(), iter(images), size)
    # The phantom's truth.csv: every image's lung box is x 20..80 %, y 25..75 % of a 320 x 400
    # file, so the whole image's IoU with it is 0.3.
    truth = labels[["path"]].rename(columns={"path": "file"})
    truth = truth.assign(dataset="chexpert", x0=64, y0=100, x1=256, y1=300, width=320, height=400)
    (root / "data/phantom").mkdir(parents=True)
    truth.to_csv(root / "data/phantom/truth.csv", index=False)

    whole = np.arange(len(labels)) % 5 == 0  # images without a confident thorax box
    settings = SETTINGS if with_yolo else ("baseline", "stn")
    for setting in settings:
        for fold in range(n_folds):
            split = np.where(
                fold_of == fold, "test", np.where(fold_of == (fold + 1) % n_folds, "val", "")
            )
            frame = labels.loc[split != "", ["path", "label"]].assign(split=split[split != ""])
            noise = rng.normal(0, 0.25, len(frame))
            frame["score"] = np.round(np.clip(0.35 + 0.3 * frame["label"] + noise, 0, 1), 2)
            if setting in ST_SETTINGS:
                window = (0.8, 0.6, 0.05, 0.1) if setting == "stn" else (0.7, 0.65, 0.0, -0.05)
                frame = frame.assign(**dict(zip(("sx", "sy", "tx", "ty"), window, strict=True)))
            run = root / "reports/runs" / setting / f"fold{fold}"
            run.mkdir(parents=True)
            frame.to_csv(run / "predictions.csv", index=False)
            metrics = {
                "best_epoch": 2,
                "val_auc": 0.8,
                "test_auc": 0.8,
                "n_train": 20,
                "n_val": 12,
                "n_test": int((split == "test").sum()),
                "n_params": 1000,
                "gflops_classifier": 0.5,
                "train_seconds": 10.0,
                "train_images_per_second": 4.0,
            }
            if setting in ST_SETTINGS:
                metrics |= {"n_params": 1100, "gflops_st": 0.1}
            if setting == "yolo":
                metrics["n_test_without_crop"] = int((whole & (split == "test")).sum())
            write_json(run / "metrics.json", metrics)
            live = run / "live/plots/metrics"
            for name in ("train/loss", "val/auc"):
                tsv = live / f"{name}.tsv"
                tsv.parent.mkdir(parents=True, exist_ok=True)
                stem = name.split("/")[-1]
                tsv.write_text(f"timestamp\tstep\t{stem}\n1\t0\t0.7\n2\t1\t0.6\n3\t2\t0.5\n")
    if with_yolo:
        box = {"x0": 0.12 * size, "y0": 0.15 * size, "x1": 0.88 * size, "y1": 0.8 * size}
        crops = labels[["path"]].assign(**box, conf=0.95)
        crops["status"] = np.where(whole, "whole", "cropped")
        crops.loc[crops["status"] == "whole", "conf"] = 0.5
        crops.to_csv(root / "data/crops.csv", index=False)
        kept = crops["path"].tolist()  # the crop store holds every image, whole or cropped
        write_store(
            root / "data/crops", kept, (np.full((size, size), 128, np.uint8) for _ in kept), size
        )
        write_json(
            root / "reports/detector.json",
            {
                "map50": 0.99,
                "map50_95": 0.8,
                "precision": 0.97,
                "recall": 0.96,
                "n_params": 2500000,
                "gflops": 7.2,
                "train_seconds": 400.0,
            },
        )
        write_json(
            root / "reports/crop.json",
            {"images": len(crops), "cropped": len(kept), "seconds": 30.0},
        )
    write_json(
        root / "reports/labels.json",
        {
            "normal": int((labels["label"] == 0).sum()),
            "abnormal": int((labels["label"] == 1).sum()),
            "findings": {f: int(labels[f].sum()) for f in FINDINGS},
            "excluded": {"not PA": 3, "neither": 1},
        },
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["folds"] = n_folds
    params["split"]["fold_ids"] = list(range(n_folds))
    params["split"]["stn_eq_fold_ids"] = list(range(n_folds)) if "stn_eq" in settings else []
    params.setdefault("report", {})["roi_examples"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def make_project():
    """`build_project`: a project folder holding every input of evaluate and report."""
    return build_project
