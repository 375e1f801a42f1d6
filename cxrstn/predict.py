"""Triage of new images: score files with the trained models and rank them, most urgent first.

This is the library behind `cxrstn predict`. Every image goes the pipeline's way: decoded
by `images.read_image`, resized by `images.resize_square` to the side the models were
trained at (`resize.size`, stored in each model.pt), for the yolo setting run through the
thorax detector and cropped exactly as the crop stage does, then scored by the fold
model(s) with the pipeline's own scoring function. An ensemble's score is the mean of its
fold models' scores. An image is called abnormal when its score reaches the operating
threshold that the evaluate stage stored in `models/thresholds.json`.

Every image is also checked (cxrstn/input_check.py, cxrstn/ood.py): `not_radiograph` when
the file is no grayscale radiograph (such a row is scored, never called abnormal, has no
rank and comes after every radiograph), `out_of_distribution` when the fold models' own
features say they have not seen films like it (the row keeps its score, call and rank),
else `ok`.

Images are scored one per forward pass: the ST module picks its antialiasing sample
count from the largest window in a batch, so in a batch an image's score could depend on
the other images; alone, it depends on the image only.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from cxrstn.images import ImageError, is_dicom, read_image, resize_square, square_box
from cxrstn.input_check import NOT_RADIOGRAPH, VALUES, appearance, colour_share, verdict
from cxrstn.io import atomic_path, read_json, write_csv
from cxrstn.ood import STATS_FILE, FeatureStats, capture_features, feature_count
from cxrstn.roi import stn_window
from cxrstn.settings import SETTINGS, ST_SETTINGS
from cxrstn.train import ST_PARAMS, _evaluate, choose_device, load_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".img", ".tif", ".tiff", ".bmp")
"""Files a folder is searched for (plus any file with the DICOM preamble, whatever its name)."""

OVERLAY_SIDE = 1024
"""Longest side of an overlay PNG; larger images are shown shrunk."""

CHUNK = 32
"""Images decoded and held at a time (the detector sees them as one batch)."""


@dataclass
class Inputs:
    """What the PATH arguments name: image files to score, and problems found on the way."""

    files: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"path", "error"}
    ignored: Counter = field(default_factory=Counter)  # folder files that are no image, by suffix
    duplicates: int = 0


def _csv_paths(csv_file: Path, inputs: Inputs) -> list[str]:
    """The paths a CSV lists: its `path` column, else its first column.

    A relative path is taken from the CSV's folder when the file is there, else from the
    current directory (where a missing file is then reported).
    """
    try:
        table = pd.read_csv(csv_file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        inputs.errors.append({"path": str(csv_file), "error": f"unreadable CSV ({error})"})
        return []
    column = "path" if "path" in table.columns else table.columns[0]
    paths = []
    for row, value in enumerate(table[column], start=2):  # line 1 is the header
        value = value.strip()
        if not value:
            inputs.errors.append({"path": f"{csv_file}:{row}", "error": f"empty {column!r}"})
            continue
        candidate = Path(value)
        if not candidate.is_absolute() and (csv_file.parent / candidate).exists():
            candidate = csv_file.parent / candidate
        paths.append(str(candidate))
    return paths


def discover(paths: list[str]) -> Inputs:
    """Expand image files, folders (searched recursively) and CSV files of paths.

    A file or CSV row is always tried, whatever its suffix; in a folder only files with an
    image suffix or the DICOM preamble are, and the others are counted in `ignored`. A
    file named twice is scored once (counted in `duplicates`).
    """
    inputs = Inputs()
    seen = set()

    def add(file: str) -> None:
        key = os.path.realpath(file)
        if key in seen:
            inputs.duplicates += 1
            return
        seen.add(key)
        inputs.files.append(file)

    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in IMAGE_SUFFIXES or is_dicom(file):
                    add(str(file))
                else:
                    inputs.ignored[file.suffix.lower() or "(no suffix)"] += 1
        elif path.suffix.lower() == ".csv" and path.is_file():
            for file in _csv_paths(path, inputs):
                add(file)
        else:
            add(given)
    return inputs


@dataclass
class Ensemble:
    """The fold models of one setting, their input side, the operating threshold and, when
    inputs are checked, each fold model's out-of-distribution statistics."""

    setting: str
    folds: list[int]
    models: list[nn.Module]
    size: int
    threshold: float
    stats: list[FeatureStats] | None = None


def model_folds(models_dir: Path, setting: str) -> list[int]:
    folds = []
    for file in models_dir.glob(f"{setting}/fold*/model.pt"):
        match = re.fullmatch(r"fold(\d+)", file.parent.name)
        if match:
            folds.append(int(match[1]))
    return sorted(folds)


def load_threshold(models_dir: Path, setting: str, folds: list[int], ensemble: bool) -> float:
    """The stored operating threshold of one fold model or of the setting's ensemble."""
    path = models_dir / "thresholds.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no operating thresholds; run the evaluate stage (dvc repro evaluate) "
            "or give --threshold"
        )
    stored = read_json(path)["settings"]
    if setting not in stored:
        raise ValueError(f"{path}: no thresholds of setting {setting}")
    if ensemble:
        return float(stored[setting]["ensemble"])
    key = str(folds[0])
    if key not in stored[setting]["folds"]:
        raise ValueError(f"{path}: no threshold of {setting} fold {key}")
    return float(stored[setting]["folds"][key])


def load_ensemble(
    models_dir: str | os.PathLike,
    setting: str,
    fold: int | None,
    device: torch.device,
    threshold: float | None = None,
    input_check: bool = True,
) -> Ensemble:
    """Fold `fold` of `setting`, or all its folds when `fold` is None (their mean score).

    The threshold is `threshold` when given, else the stored one (see load_threshold).
    With `input_check`, each model's `ood.npz` (written beside it by the train stage) too.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}: expected one of {SETTINGS}")
    models_dir = Path(models_dir)
    available = model_folds(models_dir, setting)
    if fold is None:
        folds = available
        if not folds:
            raise FileNotFoundError(f"{models_dir}/{setting}: no fold<k>/model.pt found")
    elif fold in available:
        folds = [fold]
    else:
        raise FileNotFoundError(f"{models_dir}/{setting}/fold{fold}/model.pt not found")
    models, sizes = [], set()
    for k in folds:
        file = models_dir / setting / f"fold{k}" / "model.pt"
        sizes.add(int(torch.load(file, map_location="cpu", weights_only=True)["config"]["size"]))
        models.append(load_model(file, device))
    if len(sizes) != 1:
        raise ValueError(f"{models_dir}/{setting}: fold models trained at sides {sorted(sizes)}")
    if threshold is None:
        threshold = load_threshold(models_dir, setting, folds, ensemble=fold is None)
    stats = None
    if input_check:
        stats = [
            FeatureStats.load(models_dir / setting / f"fold{k}" / STATS_FILE, feature_count(m))
            for k, m in zip(folds, models, strict=True)
        ]
    return Ensemble(setting, folds, models, sizes.pop(), float(threshold), stats)


def score(ensemble: Ensemble, image: np.ndarray, device: torch.device) -> dict:
    """Scores of one stored-size uint8 image: `score` (mean over the fold models), each
    fold's `score_fold<k>`, for an STN each fold's window `st_fold<k>` (sx, sy, tx, ty)
    and, when the ensemble has statistics, `ood_ratio`: the mean over the fold models of
    the image's feature distance divided by that model's threshold (above 1: unlike the
    films the models were trained on)."""
    if image.shape != (ensemble.size, ensemble.size) or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 {ensemble.size}x{ensemble.size}, got {image.shape}")
    tensor = torch.tensor(image).unsqueeze(0).float().div_(255.0)  # as data.ImageDataset does
    batch = [(tensor.unsqueeze(0), None, None)]
    result: dict = {}
    scores, ratios = [], []
    checked = ensemble.stats is not None
    for index, (fold, model) in enumerate(zip(ensemble.folds, ensemble.models, strict=True)):
        with capture_features(model) if checked else nullcontext() as captured:
            logits, st_params = _evaluate(model, batch, device)
        if checked:
            stats = ensemble.stats[index]
            ratios.append(stats.distances(captured[0].numpy())[0] / stats.threshold)
        value = float(1.0 / (1.0 + np.exp(-logits.astype(np.float64)[0])))  # as train.predict
        scores.append(value)
        result[f"score_fold{fold}"] = value
        if st_params is not None:
            result[f"st_fold{fold}"] = tuple(float(v) for v in st_params[0])
    result["score"] = float(np.mean(scores))
    if ratios:
        result["ood_ratio"] = float(np.mean(ratios))
    return result


@dataclass
class YoloCrop:
    """The yolo setting's detector and the crop stage's settings."""

    detector: object
    imgsz: int
    conf: float
    tta: bool
    device: str
    threads: int

    @classmethod
    def load(cls, models_dir: str | os.PathLike, params: dict) -> YoloCrop:
        from cxrstn.detector import load_detector

        return cls(
            detector=load_detector(Path(models_dir) / "detector.pt"),
            imgsz=int(params["detector"]["imgsz"]),
            conf=float(params["crop"]["conf"]),
            tta=bool(params["crop"]["tta"]),
            device=str(params["detector"]["device"]),
            threads=int(params["detector"]["threads"]),
        )

    def crops(
        self, images: list[np.ndarray], originals: list[np.ndarray], size: int
    ) -> tuple[list[np.ndarray], pd.DataFrame]:
        """The classifier inputs, as the crop stage makes them: the detector sees the
        resized `images`; an image whose best box reaches `conf` is cut from its original
        to the square around the box, any other is classified whole (every setting scores
        every image at test time). Returns the inputs and crop.csv-style rows (box in
        resized pixels, conf, status).
        """
        from cxrstn.detector import detect
        from cxrstn.thorax import crop_table, crop_to_thorax

        detections = detect(
            self.detector, images, self.imgsz, len(images), self.device, self.tta, self.threads
        )
        table = crop_table([str(i) for i in range(len(images))], detections, self.conf)
        inputs = []
        for image, original, row in zip(images, originals, table.itertuples(), strict=True):
            if row.status == "cropped":
                box = (row.x0, row.y0, row.x1, row.y1)
                inputs.append(crop_to_thorax(original, box, size, detected_on=image.shape[0]))
            else:
                inputs.append(resize_square(image, size))
        return inputs, table


def overlay(
    image: np.ndarray,
    windows: list[tuple[float, float, float, float]],
    box: tuple[float, ...] | None,
    crop: tuple[float, ...] | None,
    caption: str,
) -> np.ndarray:
    """The original image (longest side at most OVERLAY_SIDE) in colour with what the model
    looked at: STN windows as (x0, y0, x1, y1) in normalised [0, 1] image coordinates,
    and/or the detector `box` and the square `crop` in the same coordinates. Each line of
    `caption` is written below the one before, at the top left."""
    height, width = image.shape
    scale = min(1.0, OVERLAY_SIDE / max(height, width))
    shown = cv2.resize(image, (round(width * scale), round(height * scale)), cv2.INTER_AREA)
    canvas = cv2.cvtColor(shown, cv2.COLOR_GRAY2BGR)
    h, w = shown.shape
    thick = max(2, round(max(h, w) / 300))

    def rect(coords, colour, thickness):
        x0, y0, x1, y1 = coords
        corners = (round(x0 * w), round(y0 * h)), (round(x1 * w), round(y1 * h))
        cv2.rectangle(canvas, *corners, colour, thickness)

    colours = [(0, 0, 255), (0, 200, 255), (255, 128, 0), (255, 0, 255), (0, 255, 0)]
    for index, window in enumerate(windows):
        rect(window, colours[index % len(colours)], thick)
    if box is not None:
        rect(box, (0, 200, 255), max(1, thick // 2))
    if crop is not None:
        rect(crop, (0, 0, 255), thick)
    font = max(0.5, max(h, w) / 1000)
    for number, text in enumerate(caption.splitlines(), start=1):
        origin = (thick * 3, round(36 * font) * number + thick * 3)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick * 2)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 255, 255), thick)
    return canvas


def overlay_name(path: str, taken: set[str]) -> str:
    """A PNG name from the image's file name, numbered when two images share it."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem) or "image"
    name, number = f"{stem}.png", 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}.png"
    taken.add(name)
    return name


def errors_path(out: str | os.PathLike) -> Path:
    """Where the unreadable inputs are listed: `results.csv` -> `results.errors.csv`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.errors.csv")


def rank(rows: list[dict]) -> pd.DataFrame:
    """Rows sorted by score, highest first (ties by path), with `rank` 1..n; rows whose
    `input_check` is not_radiograph come after all others, sorted the same way, unranked."""
    frame = pd.DataFrame(rows)
    refused = frame.get("input_check", pd.Series("", index=frame.index)) == NOT_RADIOGRAPH
    frame = frame.assign(refused=refused).sort_values(
        ["refused", "score", "path"], ascending=[True, False, True], kind="stable"
    )
    ranks = pd.array(np.arange(1, len(frame) + 1), dtype="Int64")
    ranks[frame["refused"].to_numpy()] = pd.NA
    frame = frame.drop(columns="refused")
    frame.insert(frame.columns.get_loc("abnormal") + 1, "rank", ranks)
    return frame.reset_index(drop=True)


def check_counts(results: pd.DataFrame) -> dict[str, int]:
    """How many rows have each `input_check` value, in the order of VALUES."""
    counts = results["input_check"].value_counts()
    return {value: int(counts.get(value, 0)) for value in VALUES}


def check_summary(results: pd.DataFrame) -> str:
    """The one line `cxrstn predict` prints about the input check."""
    if "input_check" not in results.columns:
        return "input check: off (--no-input-check)"
    counts = ", ".join(f"{n} {value}" for value, n in check_counts(results).items())
    return f"input check: {counts}"


@dataclass
class Prediction:
    results: pd.DataFrame  # path, score, abnormal, rank, input_check, ..., width, ... (ranked)
    errors: pd.DataFrame  # path, error
    inputs: Inputs
    ensemble: Ensemble


def predict_files(
    paths: list[str],
    ensemble: Ensemble,
    device: torch.device,
    yolo: YoloCrop | None = None,
    overlays: str | os.PathLike | None = None,
) -> Prediction:
    """Score every image that `paths` name (see `discover`) and rank them.

    An unreadable file is listed in `errors` with the reason and never stops the run.
    """
    if (yolo is not None) != (ensemble.setting == "yolo"):
        raise ValueError("the yolo setting, and only it, needs the detector")
    inputs = discover(paths)
    errors = list(inputs.errors)
    rows: list[dict] = []
    overlay_dir = Path(overlays) if overlays is not None else None
    if overlay_dir is not None:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    size = ensemble.size
    progress = tqdm(total=len(inputs.files), desc="predict", unit="image")
    checking = ensemble.stats is not None
    for start in range(0, len(inputs.files), CHUNK):
        chunk = []  # (path, original image, resized image, why it is no radiograph)
        for file in inputs.files[start : start + CHUNK]:
            try:
                original = read_image(file)
                problem = appearance(original, colour_share(file)).problem() if checking else None
            except ImageError as error:
                errors.append({"path": file, "error": str(error).removeprefix(f"{file}: ")})
                progress.update()
                continue
            chunk.append((file, original, resize_square(original, size), problem))
        if not chunk:
            continue
        resized = [image for _, _, image, _ in chunk]
        crops = None
        if yolo is not None:
            resized, crops = yolo.crops(resized, [original for _, original, _, _ in chunk], size)
        for index, ((file, original, _, problem), image) in enumerate(
            zip(chunk, resized, strict=True)
        ):
            height, width = original.shape
            result = score(ensemble, image, device)
            row = {"path": file, "score": result["score"]}
            row["abnormal"] = int(result["score"] >= ensemble.threshold and problem is None)
            if checking:
                ratio = result["ood_ratio"]
                value, reason = verdict(problem, ratio)
                row |= {"input_check": value, "ood_ratio": ratio, "check_reason": reason}
            row |= {"width": width, "height": height}
            if len(ensemble.folds) > 1:
                row |= {f"score_fold{k}": result[f"score_fold{k}"] for k in ensemble.folds}
            windows, box, crop = [], None, None
            if ensemble.setting in ST_SETTINGS:
                thetas = np.array([result[f"st_fold{k}"] for k in ensemble.folds])
                row |= dict(zip(ST_PARAMS, thetas.mean(axis=0).tolist(), strict=True))
                windows = [tuple(stn_window(*theta, clip=False)) for theta in thetas]
            if crops is not None:
                found = crops.iloc[index]
                row |= {"conf": found["conf"], "crop": found["status"]}
                if pd.notna(found["x0"]):
                    corners = [found[c] / size for c in ("x0", "y0", "x1", "y1")]
                    box = tuple(corners)
                    row |= {
                        c: round(v * (width if c[0] == "x" else height), 1)
                        for c, v in zip(("x0", "y0", "x1", "y1"), corners, strict=True)
                    }
                if found["status"] == "cropped":
                    square = square_box(*(found[c] for c in ("x0", "y0", "x1", "y1")), size, size)
                    crop = tuple(v / size for v in square)
            if overlay_dir is not None:
                name = overlay_name(file, taken)
                called = "ABNORMAL" if row["abnormal"] else "normal"
                if problem is not None:
                    called = "not called"
                caption = f"{called} {row['score']:.3f} (threshold {ensemble.threshold:.3f})"
                if checking:
                    caption += f"\ninput check: {row['input_check']}"
                picture = overlay(original, windows, box, crop, caption)
                with atomic_path(overlay_dir / name, concurrent=True) as tmp:
                    ok, encoded = cv2.imencode(".png", picture)
                    if not ok:
                        raise OSError(f"{overlay_dir / name}: could not encode the overlay")
                    tmp.write_bytes(encoded.tobytes())
                row["overlay"] = str(overlay_dir / name)
            rows.append(row)
            progress.update()
    progress.close()
    columns = ["path", "score", "abnormal", "rank"]
    columns += ["input_check", "ood_ratio", "check_reason"] if checking else []
    columns += ["width", "height"]
    results = rank(rows) if rows else pd.DataFrame(columns=columns)
    return Prediction(results, pd.DataFrame(errors, columns=["path", "error"]), inputs, ensemble)


def write_prediction(prediction: Prediction, out: str | os.PathLike) -> Path:
    """Write the ranked results to `out` and the unreadable inputs beside it (always, so a
    stale list never survives); returns the errors file. Each file is written whole under
    its own temporary name, so two runs writing the same `out` never interleave."""
    write_csv(out, prediction.results, concurrent=True)
    errors = errors_path(out)
    write_csv(errors, prediction.errors, concurrent=True)
    return errors


def run(
    paths: list[str],
    out: str | os.PathLike,
    setting: str = "stn",
    fold: int | None = None,
    models_dir: str | os.PathLike = "models",
    params: dict | None = None,
    overlays: str | os.PathLike | None = None,
    threshold: float | None = None,
    device: str = "auto",
    input_check: bool = True,
) -> Prediction:
    """Load the models, score `paths` and write the CSV files: what `cxrstn predict` does.
    `input_check=False` leaves out the input check (and its column)."""
    chosen = choose_device(device)
    ensemble = load_ensemble(models_dir, setting, fold, chosen, threshold, input_check)
    yolo = None
    if setting == "yolo":
        if params is None:
            raise ValueError("the yolo setting needs the detector and crop params (params.yaml)")
        yolo = YoloCrop.load(models_dir, params)
    prediction = predict_files(paths, ensemble, chosen, yolo, overlays)
    write_prediction(prediction, out)
    return prediction
