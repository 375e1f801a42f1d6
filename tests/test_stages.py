"""The front stages run as users run them (`python stages/<name>.py` in a project folder),
on a hand-made CheXpert folder with broken files in it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xxhash
import yaml
from PIL import Image

from cxrstn.images import ImageStore
from cxrstn.sources.chexpert import COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def make_chexpert(root: Path, n_patients: int = 12) -> Path:
    """A CheXpert-small look-alike: one PA study per patient, 2 of 3 abnormal."""
    base = root / "CheXpert-v1.0-small"
    rows = []
    rng = np.random.default_rng(0)
    for p in range(1, n_patients + 1):
        rel = f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_frontal.jpg"
        file = root / rel
        file.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (60, 50), dtype=np.uint8)).save(file)
        abnormal = p % 3 != 0
        row = dict.fromkeys(COLUMNS, "")
        row |= {
            "Path": rel,
            "Sex": "Female",
            "Age": "40",
            "Frontal/Lateral": "Frontal",
            "AP/PA": "PA",
            "No Finding": "" if abnormal else "1.0",
            "Edema": "1.0" if abnormal else "0.0",
        }
        rows.append(row)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(base / "train.csv", index=False)
    return base


def project(tmp_path: Path, chexpert: Path, max_excluded: float = 0.5) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] |= {"chexpert": str(chexpert), "max_excluded": max_excluded}
    params["resize"] |= {"size": 32, "workers": 1}
    params["split"] |= {"folds": 3, "fold_ids": [0, 1, 2]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop("CXRSTN_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_front_stages_exclude_broken_images_and_report_them(tmp_path):
    chexpert = make_chexpert(tmp_path / "src")
    train = chexpert / "train"
    (train / "patient00001/study1/view1_frontal.jpg").write_bytes(b"")  # zero bytes
    (train / "patient00002/study1/view1_frontal.jpg").unlink()  # missing
    corrupt = train / "patient00004/study1/view1_frontal.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:100])  # truncated JPEG
    Image.new("L", (1, 1)).save(train / "patient00005/study1/view1_frontal.jpg", "JPEG")
    sixteen = np.full((64, 64), 4000, np.uint16)  # a 16-bit PNG under a .jpg name
    Image.fromarray(sixteen).save(train / "patient00007/study1/view1_frontal.jpg", "PNG")
    cwd = project(tmp_path, chexpert)

    for name in ("binarize", "resize", "split"):
        result = stage(name, cwd)
        assert result.returncode == 0, result.stderr

    report = json.loads((cwd / "reports/resize.json").read_text())
    assert (report["images"], report["stored"], report["excluded"]) == (12, 8, 4)
    excluded = {item["path"].split("/")[2]: item["reason"] for item in report["excluded_files"]}
    assert set(excluded) == {"patient00001", "patient00002", "patient00004", "patient00005"}
    assert "empty" in excluded["patient00001"]
    assert "not found" in excluded["patient00002"]
    assert "too small" in excluded["patient00005"]
    store = ImageStore(cwd / "data/resized")
    assert len(store) == 8
    assert store[next(p for p in store.paths if "patient00007" in p)].mean() > 200
    # the bytes of every original read, which the crop stage depends on instead of the folder
    originals = pd.read_csv(cwd / "data/originals.csv", dtype={"xxh3_128": str})
    assert len(originals) == 12
    for row in originals.itertuples():
        file = chexpert.parent / row.path
        if "patient00002" in row.path:  # missing: no size, no hash
            assert pd.isna(row.bytes) and pd.isna(row.xxh3_128)
            continue
        assert row.bytes == file.stat().st_size
        assert row.xxh3_128 == xxhash.xxh3_128_hexdigest(file.read_bytes())
    empty = originals[originals["path"].str.contains("patient00001")].iloc[0]
    assert empty["xxh3_128"] == "99aa06d3014798d86001c324468d497f"  # XXH3-128 of no bytes
    folds = pd.read_csv(cwd / "data/folds.csv")
    assert len(folds) == 8  # unreadable images never reach a fold
    assert json.loads((cwd / "reports/split.json").read_text())["left_out_unreadable"] == 4


def test_too_many_exclusions_stop_with_one_line(tmp_path):
    chexpert = make_chexpert(tmp_path / "src")
    (chexpert / "train/patient00001/study1/view1_frontal.jpg").write_bytes(b"")
    cwd = project(tmp_path, chexpert, max_excluded=0.01)
    assert stage("binarize", cwd).returncode == 0
    result = stage("resize", cwd)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "1 of 12 images excluded" in result.stderr
    assert (cwd / "reports/resize.json").is_file()  # the report says which file and why


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.drop(columns=["Edema"]), "Edema"),
        (lambda t: t.assign(Edema=t["Edema"].replace("1.0", "yes")), "yes"),
        (lambda t: t.assign(Edema=t["Edema"].replace("1.0", "2.0")), "2.0"),
    ],
)
def test_bad_csv_stops_with_one_line_naming_the_file(tmp_path, edit, message):
    chexpert = make_chexpert(tmp_path / "src")
    csv = chexpert / "train.csv"
    edit(pd.read_csv(csv, dtype=str, keep_default_na=False)).to_csv(csv, index=False)
    result = stage("binarize", project(tmp_path, chexpert))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert "train.csv" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("name", "section", "edit", "message"),
    [
        ("phantom", "phantom", {"finding_contrast": -1}, "finding_contrast"),
        ("train_detector", "detector", {"weights": "missing.pt"}, "missing.pt"),
    ],
)
def test_later_stages_stop_bad_settings_with_one_line(tmp_path, name, section, edit, message):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section] |= edit
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(name, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert message in result.stderr


def kill_when_written(process: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    """SIGKILL `process` as soon as `path` appears (skip the test if it ends first)."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        pytest.skip("the process finished before it could be killed")


@pytest.mark.slow
def test_a_killed_stage_leaves_no_output_and_the_rerun_completes(tmp_path):
    chexpert = make_chexpert(tmp_path / "src", n_patients=60)
    cwd = project(tmp_path, chexpert)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["resize"]["size"] = 512  # slow enough to be caught while writing
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage("binarize", cwd).returncode == 0
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stages/resize.py")],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = cwd / "data/resized.partial"
    kill_when_written(process, partial / "images.npy")
    assert not (cwd / "data/resized").exists()
    assert not (cwd / "reports/resize.json").exists()
    assert stage("resize", cwd).returncode == 0
    assert len(ImageStore(cwd / "data/resized")) == 60
    assert not partial.exists()


@pytest.mark.slow
def test_front_stages_are_deterministic(tmp_path):
    chexpert = make_chexpert(tmp_path / "src", n_patients=30)
    outputs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cwd = project(tmp_path / name, chexpert)
        for step in ("binarize", "resize", "split"):
            assert stage(step, cwd).returncode == 0
        outputs.append(
            [
                (cwd / f).read_bytes()
                for f in ("data/labels.csv", "data/folds.csv", "data/resized/images.npy")
            ]
        )
    assert outputs[0] == outputs[1]


def tiny_training_project(path: Path, chexpert: Path) -> Path:
    path.mkdir()
    cwd = project(path, chexpert)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["classifier"] |= {"width": 0.0625, "input_size": 32, "epochs": 4, "batch_size": 8}
    params["data"]["lung_boxes"] = None  # this project has no phantom truth
    params["train"] |= {"threads": 1, "workers": 0}
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    for step in ("binarize", "resize", "split"):
        assert stage(step, cwd).returncode == 0
    return cwd


@pytest.mark.slow
def test_a_killed_training_run_resumes_to_the_same_predictions(tmp_path):
    chexpert = make_chexpert(tmp_path / "src", n_patients=60)
    train = [sys.executable, str(ROOT / "stages/train.py"), "--setting", "stn", "--fold", "0"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}

    whole = tiny_training_project(tmp_path / "whole", chexpert)
    assert subprocess.run(train, cwd=whole, env=env, capture_output=True).returncode == 0

    killed = tiny_training_project(tmp_path / "killed", chexpert)
    process = subprocess.Popen(
        train, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    kill_when_written(process, killed / "checkpoints/stn/fold0/last.pt")
    assert not (killed / "reports/runs/stn/fold0/predictions.csv").exists()
    result = subprocess.run(train, cwd=killed, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resum" in (result.stdout + result.stderr).lower()
    predictions = [
        pd.read_csv(d / "reports/runs/stn/fold0/predictions.csv") for d in (whole, killed)
    ]
    pd.testing.assert_frame_equal(*predictions)
