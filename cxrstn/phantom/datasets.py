"""The four phantom datasets, written in the original on-disk formats.

Each dataset is first planned (names, labels, text flags; cheap, in the main process),
then every image is rendered and written by `run_task` from its own seed
`[seed, dataset id, image index]`, so the output is byte-identical for any worker count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from cxrstn.phantom.findings import FINDINGS, NODULE, SUPPORT_DEVICES, TUBERCULOSIS
from cxrstn.phantom.geometry import Layout
from cxrstn.phantom.labels import LABEL_COLUMNS, binary_label, sample_study
from cxrstn.phantom.lettering import sample_words, text_probability
from cxrstn.phantom.radiograph import Radiograph, render_frontal, render_lateral
from cxrstn.phantom.render import Exposure

CHEXPERT, JSRT, MONTGOMERY, SHENZHEN = 1, 2, 3, 4  # dataset ids in the seeds
CHEXPERT_DIR = "CheXpert-v1.0-small"
JSRT_DIR = "JSRT/All247images"
SCR_DIR = "SCR/scratch"
MONTGOMERY_DIR = "MontgomerySet"
SHENZHEN_DIR = "ChinaSet_AllFiles"
SHENZHEN_MASK_DIR = "shenzhen_masks/mask"
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABEL_COLUMNS)
SCR_MASKS = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
GREY_PALETTE = [level for grey in range(256) for level in (grey, grey, grey)]
UNCERTAIN_STRENGTH = 0.6  # an uncertain (-1) finding is drawn this much fainter
TB_READINGS = (
    "bilateral PTB",
    "Right PTB",
    "left PTB",
    "PTB in the right upper field",
    "PTB in the left upper field",
    "bilateral secondary PTB",
)
MONTGOMERY_TB_READINGS = (
    "bilateral changes of cavitary TB in upper lobes.",
    "right upper lobe infiltrate, TB.",
    "left upper lobe cavitary lesion, active TB.",
    "inactive scars RML. has completed treatment",
    "bilateral upper lobe fibrosis, old TB.",
)
TB_COMPANIONS = {  # finding: (probability on a TB film, its words in the reading)
    "Pleural Effusion": (0.3, "pleural effusion"),
    "Atelectasis": (0.2, "atelectasis"),
    "Pleural Other": (0.25, "pleural thickening"),
    "Consolidation": (0.2, "consolidation"),
}

PA_LAYOUT = Layout()
AP_LAYOUT = Layout(box_width=(0.60, 0.86), top=(0.02, 0.22), rotation_deg=5.0)
JSRT_LAYOUT = Layout(box_width=(0.60, 0.84), aspect=(0.72, 0.98), top=(0.04, 0.22))
MONTGOMERY_LAYOUT = Layout(
    box_width=(0.66, 0.90), aspect=(0.74, 1.0), top=(0.03, 0.16), exposed_height=(0.62, 0.72)
)
LANDSCAPE_LAYOUT = Layout(box_width=(0.55, 0.65), aspect=(0.80, 0.92), top=(0.06, 0.10))
SHENZHEN_LAYOUT = Layout(box_width=(0.58, 0.82), aspect=(0.70, 0.96), top=(0.04, 0.22))
FILM = Exposure(sharpen=(0.0, 0.2), noise=(0.005, 0.012))
SHENZHEN_EXPOSURE = Exposure(black=(0.0, 0.1), white=(0.82, 0.92), gamma=(1.4, 1.9))


@dataclass
class Task:
    """One image to render and the files to write for it."""

    dataset: int
    index: int
    file: str  # image path relative to the phantom root
    size: tuple[int, int]  # width, height
    seed: int
    contrast: float
    spec: dict = field(default_factory=dict)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def _truth(task: Task, radiograph: Radiograph, label, findings: dict, view: str) -> dict:
    x0, y0, x1, y1 = radiograph.lung_box
    height, width = radiograph.image.shape
    return {
        "dataset": ("", "chexpert", "jsrt", "montgomery", "shenzhen")[task.dataset],
        "file": task.file,
        "view": view,
        "label": label,
        "words": radiograph.words,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "width": width,
        "height": height,
        "findings": ";".join(findings),
    }


# ---------------------------------------------------------------- CheXpert


def plan_chexpert(seed: int, patients: int, size, contrast: float, correlation: float):
    """Rows of train.csv and one task per image: patients with 1-4 studies of AP or PA
    frontals (about 60% PA) and laterals; labels per study (see `labels`)."""
    rng = np.random.default_rng([seed, 0, CHEXPERT])
    rows, tasks = [], []
    for patient in range(1, patients + 1):
        sex = "Male" if rng.random() < 0.59 else "Female"
        age = int(np.clip(round(rng.normal(60, 17)), 18, 90))
        studies = int(rng.choice([1, 2, 3, 4], p=[0.5, 0.25, 0.15, 0.1]))
        study_rows = []
        for study in range(1, studies + 1):
            study_rows.append([])
            folder = f"{CHEXPERT_DIR}/train/patient{patient:05d}/study{study}"
            labels = sample_study(rng)
            label = binary_label(labels)
            if rng.random() < 0.62:
                views = [("Frontal", "PA")] + [("Lateral", "")] * (rng.random() < 0.75)
            else:
                ap = "AP" if rng.random() > 0.01 else str(rng.choice(["LL", "RL"]))
                views = [("Frontal", ap)] + [("Frontal", "AP")] * (rng.random() < 0.1)
                views += [("Lateral", "")] * (rng.random() < 0.15)
            for number, (frontal, view) in enumerate(views, start=1):
                path = f"{folder}/view{number}_{frontal.lower()}.jpg"
                text = bool(rng.random() < text_probability(label, correlation))
                row = {
                    "Path": path,
                    "Sex": sex,
                    "Age": min(age + study - 1, 90),
                    "Frontal/Lateral": frontal,
                    "AP/PA": view,
                    **labels,
                }
                study_rows[-1].append(row)
                spec = {
                    "view": view or "LAT",
                    "labels": labels,
                    "text": text,
                    "label": label,
                    "female": sex == "Female",
                }
                tasks.append(Task(CHEXPERT, len(tasks), path, tuple(size), seed, contrast, spec))
        for later_first in reversed(study_rows):  # as the real train.csv lists them
            rows.extend(later_first)
    frame = pd.DataFrame(rows, columns=list(CHEXPERT_COLUMNS))
    frame["AP/PA"] = frame["AP/PA"].replace("", np.nan)
    return frame, tasks


def _chexpert(task: Task, root: Path, rng) -> dict:
    spec = task.spec
    findings = {
        name: task.contrast * (1.0 if value == 1.0 else UNCERTAIN_STRENGTH)
        for name, value in spec["labels"].items()
        if name in FINDINGS and value in (1.0, -1.0)
    }
    words = sample_words(rng, spec["view"]) if spec["text"] else []
    width, height = task.size
    if spec["view"] == "LAT":
        radiograph = render_lateral(rng, width, height, findings=findings, words=words)
    else:
        radiograph = render_frontal(
            rng,
            width,
            height,
            findings=findings,
            words=words,
            female=spec["female"],
            devices=spec["labels"][SUPPORT_DEVICES] == 1.0,
            layout=PA_LAYOUT if spec["view"] == "PA" else AP_LAYOUT,
        )
    path = root / task.file
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_to_uint8(radiograph.image)).save(path, quality=90)
    return _truth(task, radiograph, spec["label"], findings, spec["view"])


# ---------------------------------------------------------------- JSRT + SCR


def plan_jsrt(seed: int, images: int, side: int, contrast: float) -> list[Task]:
    """JPCLN### (nodule, 154 of 247 in the real set) and JPCNN### (none) images."""
    if side % 2 or side < 64:
        raise ValueError(
            f"phantom.jsrt_side must be even and >= 64 (SCR masks are half of it), got {side}"
        )
    nodules = round(images * 154 / 247)
    names = [f"JPCLN{i:03d}" for i in range(1, nodules + 1)]
    names += [f"JPCNN{i:03d}" for i in range(1, images - nodules + 1)]
    return [
        Task(
            JSRT,
            index,
            f"{JSRT_DIR}/{name}.IMG",
            (side, side),
            seed,
            contrast,
            {"name": name, "fold": f"fold{index % 2 + 1}", "nodule": name.startswith("JPCLN")},
        )
        for index, name in enumerate(names)
    ]


def _jsrt(task: Task, root: Path, rng) -> dict:
    side = task.size[0]
    findings = {NODULE: task.contrast} if task.spec["nodule"] else {}
    radiograph = render_frontal(
        rng, side, side, findings=findings, layout=JSRT_LAYOUT, exposure=FILM
    )
    # 12-bit values in big-endian 16-bit words, high values dark (film density inverted)
    raw = np.round((1.0 - radiograph.image) * 4095).astype(">u2")
    path = root / task.file
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.tofile(path)
    masks = (
        radiograph.left_lung,
        radiograph.right_lung,
        radiograph.heart,
        radiograph.left_clavicle,
        radiograph.right_clavicle,
    )
    for name, mask in zip(SCR_MASKS, masks, strict=True):
        half = cv2.resize(
            mask.astype(np.uint8) * 255, (side // 2, side // 2), interpolation=cv2.INTER_AREA
        )
        gif = root / SCR_DIR / task.spec["fold"] / "masks" / name / f"{task.spec['name']}.gif"
        gif.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(half >= 128, 255, 0).astype(np.uint8)).save(gif)
    return _truth(task, radiograph, int(task.spec["nodule"]), findings, "PA")


# ---------------------------------------------------------------- Montgomery


def _ids(rng, count: int, first: int, last: int) -> list[int]:
    """`count` sorted, non-contiguous ids from first..last (widened when too few)."""
    pool = np.arange(first, max(last, first + count - 1) + 1)
    return sorted(int(i) for i in rng.choice(pool, size=count, replace=False))


def plan_montgomery(seed: int, images: int, size, contrast: float) -> list[Task]:
    """MCUCXR_####_L: normals among ids 1-99, TB among 104-399 (real: 80 normal, 58 TB)."""
    rng = np.random.default_rng([seed, 0, MONTGOMERY])
    tb = round(images * 58 / 138)
    cases = [(i, 0) for i in _ids(rng, images - tb, 1, 99)] + [
        (i, 1) for i in _ids(rng, tb, 104, 399)
    ]
    return [
        Task(
            MONTGOMERY,
            index,
            f"{MONTGOMERY_DIR}/CXR_png/MCUCXR_{number:04d}_{label}.png",
            tuple(size),
            seed,
            contrast,
            {"label": label},
        )
        for index, (number, label) in enumerate(cases)
    ]


def tb_findings(rng, label: int, contrast: float) -> tuple[dict[str, float], list[str]]:
    """The findings of a TB (label 1) film and the words its reading adds for them.

    Real TB films are not infiltrates alone: their readings name effusions, atelectasis,
    pleural thickening and consolidation (e.g. Shenzhen "PTB with right upper atelectasis").
    Drawing these companions, each named in the reading, also shows the detector lung
    fields whose bases and edges are hidden, as CheXpert's effusions and collapses hide them.
    """
    if not label:
        return {}, []
    findings, words = {TUBERCULOSIS: contrast}, []
    for name, (probability, text) in TB_COMPANIONS.items():
        if rng.random() < probability:
            findings[name] = contrast
            words.append(text)
    return findings, words


def _montgomery(task: Task, root: Path, rng) -> dict:
    label = task.spec["label"]
    width, height = task.size
    landscape = rng.random() < 0.1
    if landscape:
        width, height = height, width
    findings, companions = tb_findings(rng, label, task.contrast)
    radiograph = render_frontal(
        rng,
        width,
        height,
        findings=findings,
        words=["R", "PA", "ERECT"],
        female=rng.random() < 0.5,
        layout=LANDSCAPE_LAYOUT if landscape else MONTGOMERY_LAYOUT,
        exposure=FILM,
    )
    path = root / task.file
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_to_uint8(radiograph.image)).save(path)
    masks = root / MONTGOMERY_DIR / "ManualMask"
    _save_mask(masks / "leftMask" / path.name, radiograph.left_lung)
    _save_mask(masks / "rightMask" / path.name, radiograph.right_lung)
    reading = str(rng.choice(MONTGOMERY_TB_READINGS)) if label else "normal"
    if companions:
        reading += f" {', '.join(companions)}."
    sex = "F" if rng.random() < 0.5 else "M"
    text = f"Patient's Sex: {sex} \nPatient's Age: {rng.integers(15, 90):03d}Y\n{reading}\n"
    readings = root / MONTGOMERY_DIR / "ClinicalReadings" / f"{path.stem}.txt"
    readings.parent.mkdir(parents=True, exist_ok=True)
    readings.write_bytes(text.encode())
    return _truth(task, radiograph, label, findings, "PA")


# ---------------------------------------------------------------- Shenzhen


def plan_shenzhen(seed: int, images: int, size, contrast: float, mask_share: float) -> list[Task]:
    """CHNCXR_####_L: normals first, then TB (real: 326 and 336); masks for `mask_share`."""
    if not 0 <= mask_share <= 1:
        raise ValueError(f"phantom.shenzhen_mask_share must be in [0, 1], got {mask_share}")
    rng = np.random.default_rng([seed, 0, SHENZHEN])
    tb = round(images * 336 / 662)
    masked = set(rng.permutation(images)[: round(mask_share * images)].tolist())
    return [
        Task(
            SHENZHEN,
            index,
            f"{SHENZHEN_DIR}/CXR_png/CHNCXR_{index + 1:04d}_{label}.png",
            tuple(size),
            seed,
            contrast,
            {"label": label, "mask": index in masked},
        )
        for index, label in enumerate([0] * (images - tb) + [1] * tb)
    ]


def _shenzhen(task: Task, root: Path, rng) -> dict:
    label = task.spec["label"]
    width, height = task.size
    findings, companions = tb_findings(rng, label, task.contrast)
    words = ["L"] if rng.random() < 0.6 else []
    radiograph = render_frontal(
        rng,
        width,
        height,
        findings=findings,
        words=words,
        female=rng.random() < 0.4,
        layout=SHENZHEN_LAYOUT,
        exposure=SHENZHEN_EXPOSURE,
    )
    path = root / task.file
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = _to_uint8(radiograph.image)
    mode = rng.choice(["L", "P", "RGB"], p=[0.7, 0.2, 0.1])
    if mode == "P":  # 8-bit palette holding a grey ramp, as reported for some copies
        image = Image.frombytes("P", (gray.shape[1], gray.shape[0]), gray.tobytes())
        image.putpalette(GREY_PALETTE)
    elif mode == "RGB":
        image = Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    else:
        image = Image.fromarray(gray)
    image.save(path)
    if task.spec["mask"]:
        _save_mask(root / SHENZHEN_MASK_DIR / f"{path.stem}_mask.png", radiograph.lungs)
    sex = "male" if rng.random() < 0.7 else "female"
    reading = str(rng.choice(TB_READINGS)) if label else "normal"
    if companions:
        reading += f" with {' and '.join(companions)}"
    readings = root / SHENZHEN_DIR / "ClinicalReadings" / f"{path.stem}.txt"
    readings.parent.mkdir(parents=True, exist_ok=True)
    readings.write_bytes(f"{sex} {rng.integers(10, 80)}yrs\r\n{reading}".encode())
    return _truth(task, radiograph, label, findings, "PA")


# ---------------------------------------------------------------- running


_WRITERS = {CHEXPERT: _chexpert, JSRT: _jsrt, MONTGOMERY: _montgomery, SHENZHEN: _shenzhen}


def run_task(task: Task, root: str | os.PathLike) -> dict:
    """Render one image from its own seed and write its files under `root`."""
    rng = np.random.default_rng([task.seed, task.dataset, task.index])
    return _WRITERS[task.dataset](task, Path(root), rng)


def _run(args) -> dict:
    return run_task(*args)


def _size(params: dict, key: str) -> tuple[int, int]:
    """A `[width, height]` parameter; each side at least 32 pixels (the readers' minimum)."""
    size = params[key]
    if len(size) != 2 or min(size) < 32 or any(int(side) != side for side in size):
        raise ValueError(f"phantom.{key} must be [width, height] in whole pixels >= 32, got {size}")
    return int(size[0]), int(size[1])


def generate(params: dict, root: str | os.PathLike) -> pd.DataFrame:
    """Write all four phantom datasets under `root` (the `phantom` params section).

    Returns the ground truth of every image (also written to `root/truth.csv`): dataset,
    file, view, label, burned-in text blocks, lung box and the findings drawn.
    """
    root = Path(root)
    seed, contrast = int(params["seed"]), float(params["finding_contrast"])
    if contrast < 0:
        raise ValueError(f"phantom.finding_contrast must be >= 0, got {contrast}")
    train, tasks = plan_chexpert(
        seed,
        int(params["chexpert_patients"]),
        _size(params, "chexpert_size"),
        contrast,
        float(params["text_label_correlation"]),
    )
    tasks += plan_jsrt(seed, int(params["jsrt_images"]), int(params["jsrt_side"]), contrast)
    tasks += plan_montgomery(
        seed, int(params["montgomery_images"]), _size(params, "montgomery_size"), contrast
    )
    tasks += plan_shenzhen(
        seed,
        int(params["shenzhen_images"]),
        _size(params, "shenzhen_size"),
        contrast,
        float(params["shenzhen_mask_share"]),
    )
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(task, str(root)) for task in tasks]
    workers = int(params.get("workers") or 0) or os.cpu_count() or 1
    progress = {"total": len(jobs), "desc": "phantom", "unit": "img"}
    if workers == 1:
        truth = [_run(job) for job in tqdm(jobs, **progress)]
    else:
        with Pool(workers) as pool:
            truth = list(tqdm(pool.imap(_run, jobs, chunksize=8), **progress))
    (root / CHEXPERT_DIR).mkdir(parents=True, exist_ok=True)
    train.to_csv(root / CHEXPERT_DIR / "train.csv", index=False, lineterminator="\n")
    truth = pd.DataFrame(truth).astype({"label": "Int64"})
    truth.to_csv(root / "truth.csv", index=False, lineterminator="\n")
    return truth
