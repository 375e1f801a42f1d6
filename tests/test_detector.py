"""The ultralytics wrapper: offline set-up, a tiny training run, weights export and detection.

Training here checks the plumbing only (2 epochs at 64 px on 8 synthetic images, a few
seconds): the files it writes, the metrics it returns, that ultralytics wrote nothing
outside its run folder (no dvc.yaml, dvclive/ or runs/), and the box coordinates of detect.
"""

import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml
from test_thorax import FakeSample
from tqdm import tqdm

from cxrstn.detector import (
    RUN_PREFIX,
    _show_epoch,
    detect,
    export_weights,
    load_detector,
    resolve_device,
    run_folder,
    setup_ultralytics,
    sha256_of,
    train_detector,
    trainer_settings,
    verify_weights,
)
from cxrstn.runtime import CACHE_DIR, PROJECT_ROOT
from cxrstn.thorax import build_yolo_dataset

TINY = {
    "model": "yolov5n.yaml",
    "weights": None,
    "device": "cpu",
    "epochs": 2,
    "imgsz": 64,
    "batch": 4,
    "nbs": 4,
    "lr0": 0.01,
    "optimizer": "SGD",
    "seed": 0,
    "deterministic": True,
    "workers": 0,
    "augment": {"mosaic": 0.0, "close_mosaic": 0},
}
TINY["threads"] = min(8, max(1, (os.cpu_count() or 1) - 1)) + 1  # not ultralytics' own choice


def ellipse_sample(index: int) -> FakeSample:
    """A bright disc with two dark 'lungs' whose union box is known."""
    rng = np.random.default_rng(index)
    image = np.full((96, 80), 40, np.uint8)
    cv2.ellipse(image, (40, 48), (36, 44), 0, 0, 360, 200, -1)
    mask = np.zeros_like(image, dtype=bool)
    left, right = rng.integers(18, 24), rng.integers(56, 62)
    for cx in (left, right):
        lung = np.zeros_like(image)
        cv2.ellipse(lung, (int(cx), 46), (10, 26), 0, 0, 360, 1, -1)
        mask |= lung > 0
    image[mask] = 70
    return FakeSample("jsrt", f"S{index:02d}", image, mask)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run in a scratch working directory: (run dir, metrics, cwd)."""
    root = tmp_path_factory.mktemp("detector")
    build_yolo_dataset([ellipse_sample(i) for i in range(8)], root / "thorax", 64, 0.25, 0)
    cwd = root / "cwd"
    cwd.mkdir()
    before = sorted(p.name for p in PROJECT_ROOT.iterdir())
    previous = Path.cwd()
    os.chdir(cwd)
    threads = torch.get_num_threads()
    try:
        metrics = train_detector(root / "thorax" / "data.yaml", root / "run" / "train", TINY)
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)
    assert sorted(p.name for p in PROJECT_ROOT.iterdir()) == before
    return root, metrics, cwd


def test_threads_param_overrides_ultralytics_choice(trained):
    """Ultralytics sets min(8, cores - 1) torch threads on the CPU; `threads` wins."""
    from ultralytics.utils import NUM_THREADS

    assert TINY["threads"] != NUM_THREADS
    assert trained[1]["threads"] == TINY["threads"]


def test_setup_keeps_ultralytics_offline_and_quiet():
    setup_ultralytics()
    from ultralytics import settings

    assert (Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf").stat().st_size > 0
    assert settings["dvc"] is False and settings["sync"] is False
    assert str(settings["runs_dir"]).startswith(str(CACHE_DIR))


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("0") == "0"
    expected = "cpu"
    if torch.backends.mps.is_available():
        expected = "mps"
    if torch.cuda.is_available():
        expected = "0"
    assert resolve_device("auto") == expected


@pytest.mark.slow
def test_training_writes_only_its_run_folder(trained):
    root, metrics, cwd = trained
    assert set(metrics) == {
        "map50", "map50_95", "precision", "recall", "n_params", "gflops", "train_seconds", "epochs",
        "threads",
    }  # fmt: skip
    assert all(0 <= metrics[k] <= 1 for k in ("map50", "map50_95", "precision", "recall"))
    assert 2_000_000 < metrics["n_params"] < 3_000_000  # YOLOv5u-n at one class: 2.5 M
    assert metrics["gflops"] > 0 and metrics["epochs"] == 2
    assert (root / "run" / "train" / "weights" / "best.pt").is_file()
    assert list(cwd.iterdir()) == []
    for name in ("dvc.yaml", "dvclive", "runs"):
        assert not list(root.rglob(name)), name
    assert not (PROJECT_ROOT / "runs").exists() and not (PROJECT_ROOT / "dvclive").exists()


@pytest.mark.slow
def test_exported_weights_are_reproducible_and_detect_in_input_pixels(trained, tmp_path):
    root, _, _ = trained
    best = root / "run" / "train" / "weights" / "best.pt"
    first, second = tmp_path / "a" / "detector.pt", tmp_path / "b" / "detector.pt"
    for out in (first, second):
        out.parent.mkdir()
        export_weights(best, out)
    assert first.read_bytes() == second.read_bytes()  # torch.save stores the file's stem too
    checkpoint = torch.load(first, weights_only=False)
    assert set(checkpoint) == {"model", "train_args"}

    model = load_detector(first)
    images = [ellipse_sample(i).image for i in range(3)] + [np.zeros((200, 120), np.uint8)]
    threads = torch.get_num_threads()
    for tta in (False, True):
        try:
            boxes = detect(
                model,
                iter(images),
                imgsz=64,
                batch=3,
                device="cpu",
                tta=tta,
                threads=TINY["threads"],
            )
            assert torch.get_num_threads() == TINY["threads"]  # not ultralytics' cores - 1
        finally:
            torch.set_num_threads(threads)
        assert len(boxes) == 4
        ours = [h for h in model.callbacks["on_predict_start"] if hasattr(h, "func")]
        assert len(ours) == 1  # each call replaces the hook the last one added
        for image, box in zip(images, boxes, strict=True):
            if box is None:
                continue
            x0, y0, x1, y1, conf = box
            height, width = image.shape
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and 0 < conf <= 1


def test_trainer_settings_merge_direct_keys_and_augment():
    settings = trainer_settings({**TINY, "val_fraction": 0.2, "augment": {"cls": 0.25}})
    assert settings["cls"] == 0.25 and settings["epochs"] == 2 and "val_fraction" not in settings
    assert "model" not in settings and "augment" not in settings
    with pytest.raises(ValueError, match="cls"):
        trainer_settings({**TINY, "cls": 0.5, "augment": {"cls": 0.25}})


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_detector(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match=r"none\.pt: detector.weights file not found.*null"):
        train_detector(tmp_path / "data.yaml", tmp_path / "run", {**TINY, "weights": "none.pt"})


# ---- leftovers of killed runs, and weights that are not what the user recorded -------------


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_run_folder_removes_itself_and_the_leftovers_of_dead_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parent, host = tmp_path / ".cache" / "detector-runs", socket.gethostname()
    dead = parent / f"{RUN_PREFIX}{host}-{dead_pid()}"
    running = parent / f"{RUN_PREFIX}{host}-{os.getppid()}"  # a live process's run
    elsewhere = parent / f"{RUN_PREFIX}another-host-{dead_pid()}"  # shared disk: not ours
    legacy = tmp_path / "models" / ".detector-run-abc123"  # where older versions trained
    for folder in (dead, running, elsewhere, legacy):
        (folder / "train" / "weights").mkdir(parents=True)
    with run_folder(parent) as folder:
        assert folder.parent == parent and folder.is_dir()
        assert not dead.exists() and not legacy.exists()
        assert running.is_dir() and elsewhere.is_dir()
        (folder / "train").mkdir()
    assert not folder.exists()
    with pytest.raises(RuntimeError), run_folder(parent) as folder:
        raise RuntimeError("training failed")
    assert not folder.exists()
    assert list((tmp_path / "models").iterdir()) == []


class RunsCode:
    """Unpickling this creates a file: what a hostile .pt can do when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_whose_hash_differs_are_never_unpickled(tmp_path):
    weights, marker = tmp_path / "yolov5su.pt", tmp_path / "code-ran"
    torch.save({"model": RunsCode(marker)}, weights)
    wrong = "0" * 64
    with pytest.raises(ValueError, match=rf"{weights}: sha256 [0-9a-f]{{64}} differs") as refused:
        train_detector(
            tmp_path / "data.yaml",
            tmp_path / "run",
            {**TINY, "weights": str(weights), "weights_sha256": wrong},
        )
    assert "sha256sum" in str(refused.value)
    assert not marker.exists()
    torch.load(weights, weights_only=False)  # what ultralytics would have done with it
    assert marker.exists()


def test_weights_hash_matches_sha256sum_and_no_hash_warns_once(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not really weights")
    expected = hashlib.sha256(b"not really weights").hexdigest()
    assert sha256_of(weights) == expected
    if shutil.which("sha256sum"):
        printed = subprocess.run(["sha256sum", str(weights)], capture_output=True, text=True)
        assert printed.stdout.split()[0] == expected
    verify_weights(weights, expected)
    verify_weights(weights, expected.upper())
    assert capsys.readouterr().err == ""
    verify_weights(weights, None)
    verify_weights(weights, None)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"sha256sum {weights}" in err


@pytest.mark.slow
def test_a_killed_detector_stage_leaves_nothing_in_models_and_the_rerun_cleans_up(tmp_path):
    """SIGKILL while ultralytics trains: its folder stays outside models/ (whose hash the
    shortcut stage depends on), and the rerun removes it and completes."""
    build_yolo_dataset([ellipse_sample(i) for i in range(8)], tmp_path / "data/thorax", 64, 0.25, 0)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["detector"] |= {k: v for k, v in TINY.items() if k != "threads"} | {"epochs": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, str(PROJECT_ROOT / "stages" / "train_detector.py")]
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, **quiet)
    runs = tmp_path / ".cache" / "detector-runs"
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob("weights/*.pt")) and process.poll() is None:  # wherever it is
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait()
    if process.returncode != -signal.SIGKILL:
        pytest.skip("the stage finished before it could be killed")
    models = tmp_path / "models"
    assert not models.exists() or list(models.iterdir()) == []  # the killed run's folder is
    assert list(runs.glob("run-*"))  # not in models/ but here

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert list(runs.iterdir()) == []
    assert sorted(p.name for p in models.iterdir()) == ["detector.pt"]


@pytest.mark.parametrize("disable", [False, True])
def test_each_detector_epoch_shows_its_summed_loss_with_or_without_a_progress_bar(disable):
    """ultralytics keeps the epoch's losses by name; the bar shows their sum. With the bar
    disabled (TQDM_DISABLE=1) the callback once crashed on that dict."""
    progress = tqdm(total=3, file=io.StringIO(), disable=disable)
    trainer = SimpleNamespace(tloss={"box_loss": torch.tensor(1.5), "cls_loss": torch.tensor(0.25)})
    _show_epoch(progress, trainer)
    if not disable:
        assert progress.n == 1 and progress.postfix == "loss=1.75"
