"""The YOLO thorax detector: offline-safe ultralytics set-up, training and detection.

Ultralytics assumes a networked, interactive machine: it downloads a font, enables its own
DVCLive logger (which rewrites the project's dvc.yaml under `dvc repro`), and writes runs
and settings wherever it likes. `setup_ultralytics()` closes each of these doors and must
run before any other use; every function here calls it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cxrstn.device import choose_device
from cxrstn.io import process_alive
from cxrstn.runtime import CACHE_DIR, configure_tools

TRAIN_KEYS = (
    "epochs", "imgsz", "batch", "nbs", "lr0", "lrf", "optimizer", "momentum", "weight_decay",
    "warmup_epochs", "cos_lr", "box", "cls", "dfl", "seed", "deterministic", "workers", "cache",
)  # fmt: skip
"""Keys of the `detector` parameters passed to ultralytics' trainer as they are, when present."""

METRIC_KEYS = {
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
}

_LOGGER_SETTINGS = ("sync", "dvc", "mlflow", "clearml", "comet", "raytune", "tensorboard", "wandb")


def setup_ultralytics() -> None:
    """Make ultralytics work offline and write only inside the project.

    A font is put where ultralytics looks for Arial.ttf (else it tries a download), every
    logger integration is switched off (its DVCLive callback rewrites dvc.yaml), and the
    default datasets/weights/runs folders point into `.cache/`.
    """
    configure_tools()  # ultralytics reads its folder and offline switches when imported
    config_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font = config_dir / "Arial.ttf"
    if not font.exists():
        import matplotlib

        config_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)

    from ultralytics import settings
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)  # quiet: no per-batch bars or summaries, warnings still shown
    wanted = {key: False for key in _LOGGER_SETTINGS}
    wanted |= {
        "datasets_dir": str(CACHE_DIR / "ultralytics" / "datasets"),
        "weights_dir": str(CACHE_DIR / "ultralytics" / "weights"),
        "runs_dir": str(CACHE_DIR / "ultralytics" / "runs"),
    }
    if any(settings.get(key) != value for key, value in wanted.items()):
        settings.update(wanted)


def resolve_device(device: str) -> str:
    """Ultralytics' device string: `auto` as the classifiers pick it (first CUDA GPU, else
    Apple MPS, else CPU), any other value as given."""
    if device != "auto":
        return str(device)
    chosen = choose_device("auto")
    return "0" if chosen.type == "cuda" else chosen.type


def trainer_settings(params: dict) -> dict:
    """The ultralytics trainer settings in `params`: the `TRAIN_KEYS` plus `params["augment"]`."""
    settings = {key: params[key] for key in TRAIN_KEYS if key in params}
    augment = params.get("augment") or {}
    if twice := sorted(settings.keys() & augment.keys()):
        raise ValueError(f"detector params set {twice} both directly and under augment")
    return settings | augment


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256 as `sha256sum` prints it, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


_UNCHECKED_WARNED: set[str] = set()


def verify_weights(path: str | os.PathLike, expected: str | None) -> None:
    """Refuse a weights file whose sha256 is not `expected`, before anything unpickles it.

    Ultralytics loads .pt files with pickle, which can run any code the file holds, so a
    file swapped on disk or downloaded from the wrong place must never be opened. With
    no `expected` hash the file is used, with one warning per file and process.
    """
    if expected is None:
        if str(path) not in _UNCHECKED_WARNED:
            _UNCHECKED_WARNED.add(str(path))
            print(
                f"warning: {path}: detector.weights is loaded unchecked (a .pt file can run "
                f"code when loaded); record its hash as detector.weights_sha256: "
                f"sha256sum {path}",
                file=sys.stderr,
            )
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ValueError(
            f"{path}: sha256 {actual} differs from detector.weights_sha256 {expected.lower()}; "
            "the file is not loaded (loading a .pt file can run code). If you trust this "
            "file, record its hash: sha256sum " + str(path)
        )


RUN_PREFIX = "run-"
"""Name of a training run folder: `run-<host>-<pid>` of the process that owns it."""


def remove_stale_runs(
    parent: str | os.PathLike, legacy: str | os.PathLike = "models"
) -> list[Path]:
    """Delete run folders whose process is gone; return what was deleted.

    A run killed with SIGKILL cannot clean up after itself. Its folder under `parent` is
    removed when its owner (named in the folder) ran on this host and no longer runs; a
    folder of a running training, or of another host sharing the disk, is kept. Folders
    `.detector-run-*` in `legacy` (where older versions trained, inside the DVC-tracked
    models/ folder) are removed too: no current run writes there.
    """
    removed = []
    host = socket.gethostname()
    for folder in sorted(Path(parent).glob(f"{RUN_PREFIX}*")):
        owner_host, _, pid = folder.name.removeprefix(RUN_PREFIX).rpartition("-")
        if owner_host == host and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for folder in sorted(Path(legacy).glob(".detector-run-*")):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextlib.contextmanager
def run_folder(parent: str | os.PathLike, legacy: str | os.PathLike = "models") -> Iterator[Path]:
    """A fresh folder for ultralytics' run, removed afterwards however the block ends.

    It lives under `parent` (the stage passes `.cache/detector-runs`, outside every DVC
    output and dependency), so even a folder a SIGKILL leaves behind changes no stage's
    hash; the next run deletes such leftovers first (`remove_stale_runs`).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_runs(parent, legacy)
    folder = parent / f"{RUN_PREFIX}{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)  # left by a dead process that had our pid
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _show_epoch(progress: tqdm, trainer) -> None:
    """One more epoch on the progress bar, with the epoch's mean training loss (the sum of
    box, classification and DFL losses; ultralytics keeps them by name)."""
    progress.update()
    progress.set_postfix(loss=float(sum(trainer.tloss.values())))


def train_detector(data_yaml: str | os.PathLike, out_dir: str | os.PathLike, params: dict) -> dict:
    """Train the one-class thorax detector on `data_yaml`; ultralytics' run folder is `out_dir`.

    The model is built from `params["model"]` (an ultralytics yaml such as yolov5n.yaml,
    no download) or loaded from local `params["weights"]` (a .pt file, e.g. the COCO
    weights the paper fine-tunes), checked first against `params["weights_sha256"]`
    (`verify_weights`). `TRAIN_KEYS` and `params["augment"]` go to the trainer
    as they are; `params["threads"]` sets torch's CPU threads (0 or absent: all cores).
    With `params["keep_best"]` every epoch is validated and the best one (by ultralytics'
    fitness, 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95) is kept, as the paper's training does;
    without, validation is skipped until the end (saves CPU time) and the last epoch is
    kept. The kept weights end up in `out_dir/weights/best.pt`. Returns the validation
    mAP@0.5, mAP@0.5:0.95, precision and recall, the model's parameter count, its GFLOPs
    at `imgsz`, the training time in seconds and the torch threads it trained with.
    """
    setup_ultralytics()
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    out_dir = Path(out_dir).resolve()
    weights = params.get("weights")
    if weights and not Path(weights).is_file():
        raise ValueError(
            f"{weights}: detector.weights file not found; nothing is downloaded: put the "
            "file there (docs/detector.md, 'COCO weights'), or set "
            "detector.weights: null to train from scratch"
        )
    if weights:
        verify_weights(weights, params.get("weights_sha256"))
    model = YOLO(weights or params["model"])  # after verify_weights: this unpickles weights
    progress = tqdm(total=int(params["epochs"]), desc="train detector", unit="epoch")
    model.add_callback("on_train_epoch_end", lambda trainer: _show_epoch(progress, trainer))
    # Ultralytics sets torch to min(8, cores - 1) threads whenever it picks a CPU device
    # (one thread on 2 cores; again for the final validation); `threads` (0 = all cores)
    # wins for every training epoch.
    threads = int(params.get("threads", 0)) or os.cpu_count()
    used = []
    model.add_callback("on_train_epoch_start", lambda _: torch.set_num_threads(threads))
    model.add_callback("on_train_epoch_end", lambda _: used.append(torch.get_num_threads()))
    # channels_last: the faster convolution layout (1.13x training images/s measured on the
    # CPU); parameters change layout in place, so the optimizer and EMA keep tracking them
    model.add_callback(
        "on_pretrain_routine_end",
        lambda trainer: trainer.model.to(memory_format=torch.channels_last),
    )
    started = time.perf_counter()
    model.train(
        data=str(Path(data_yaml).resolve()),
        project=str(out_dir.parent),
        name=out_dir.name,
        exist_ok=True,
        device=resolve_device(params.get("device", "auto")),
        single_cls=True,
        pretrained=bool(weights),
        val=bool(params.get("keep_best", False)),
        plots=False,
        verbose=False,
        **trainer_settings(params),
    )
    train_seconds = time.perf_counter() - started
    progress.close()
    final = model.trainer.metrics
    metrics = {name: round(float(final[key]), 4) for name, key in METRIC_KEYS.items()}
    metrics["n_params"] = int(get_num_params(model.model))
    metrics["gflops"] = round(float(get_flops(model.model, params["imgsz"])), 3)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["epochs"] = int(params["epochs"])
    metrics["threads"] = max(used)
    return metrics


def export_weights(best_pt: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """Save the trained model from ultralytics' `best.pt` without its date, paths and optimizer.

    Ultralytics stamps every checkpoint with the time and the run's absolute paths, so the
    file changed on every run even when the weights did not. The slim copy holds only what
    `YOLO(path)` needs (the model and its task/size arguments) and loads the same way.
    """
    checkpoint = torch.load(best_pt, map_location="cpu", weights_only=False)
    model = checkpoint.get("ema") or checkpoint["model"]
    kept_args = {k: checkpoint["train_args"][k] for k in ("task", "imgsz", "single_cls")}
    model.args = dict(kept_args)
    torch.save({"model": model, "train_args": kept_args}, out_path)


def load_detector(weights: str | os.PathLike):
    """The trained detector (an ultralytics YOLO model) from a weights file."""
    setup_ultralytics()
    from ultralytics import YOLO

    if not Path(weights).is_file():
        raise ValueError(f"{weights}: detector weights file not found")
    return YOLO(str(weights))


def _set_threads(threads: int, _predictor) -> None:
    torch.set_num_threads(threads)


def detect(
    model,
    images: Iterable[np.ndarray],
    imgsz: int,
    batch: int = 16,
    device: str = "auto",
    tta: bool = False,
    threads: int = 0,
) -> list[tuple[float, float, float, float, float] | None]:
    """The most confident box `(x0, y0, x1, y1, conf)` per image, or None where there is none.

    `images` (any iterable, read `batch` at a time, so a whole image store never sits in
    memory) are uint8 grayscale (2-D) or BGR arrays of any size; boxes come back in each
    input image's pixel coordinates. Detections of any confidence are kept (the caller
    applies its own threshold), so a low-confidence box is still reported as such.
    `tta` is YOLOv5's test-time augmentation (`detect.py --augment`): the image is also
    seen flipped and at two smaller scales, and the most confident box of the three is kept.
    `threads` sets torch's CPU threads for inference (0: all cores), as for training.
    """
    setup_ultralytics()
    # Ultralytics sets cores - 1 threads when it sets up the model; this hook runs after
    # that, and replaces the one an earlier call added.
    hooks = model.callbacks["on_predict_start"]
    hooks[:] = [hook for hook in hooks if getattr(hook, "func", None) is not _set_threads]
    model.add_callback("on_predict_start", partial(_set_threads, int(threads) or os.cpu_count()))
    device = resolve_device(device)
    images = iter(images)
    results: list[tuple[float, float, float, float, float] | None] = []
    progress = tqdm(desc="detect", unit="image")
    while chunk := list(itertools.islice(images, batch)):
        chunk = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in chunk]
        predictions = model.predict(
            chunk,
            imgsz=imgsz,
            conf=0.001,
            max_det=1,
            augment=tta,
            device=device,
            verbose=False,
        )
        for prediction in predictions:
            boxes = prediction.boxes
            if len(boxes) == 0:
                results.append(None)
                continue
            best = int(boxes.conf.argmax())
            x0, y0, x1, y1 = (float(v) for v in boxes.xyxy[best].tolist())
            results.append((x0, y0, x1, y1, float(boxes.conf[best])))
        progress.update(len(chunk))
    progress.close()
    return results
