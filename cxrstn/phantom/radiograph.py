"""One phantom radiograph: a frontal (PA/AP) or lateral chest film with its masks and text.

`render_frontal` is the anatomy renderer of the phantom: a seeded float image of a chest
radiograph look-alike together with the exact left and right lung, heart and clavicle
masks it was drawn from. Left and right are the patient's: the left lung is on the image
right.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cxrstn.phantom import findings as F
from cxrstn.phantom.geometry import (
    Layout,
    closed_spline,
    open_spline,
    sample_anatomy,
    sample_frame,
)
from cxrstn.phantom.lettering import burn_text
from cxrstn.phantom.render import Exposure, Scene, build_scene, expose, gaussian_noise_field


@dataclass
class Radiograph:
    """A rendered film: display image (float32 in [0, 1], bright = dense) and boolean masks."""

    image: np.ndarray
    right_lung: np.ndarray
    left_lung: np.ndarray
    heart: np.ndarray
    right_clavicle: np.ndarray
    left_clavicle: np.ndarray
    lung_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of both lungs
    words: int  # burned-in text blocks drawn

    @property
    def lungs(self) -> np.ndarray:
        return self.right_lung | self.left_lung


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1 exclusive, y1 exclusive) of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no bounding box")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _burn(rng, image: np.ndarray, box, words: list[str]) -> int:
    if not words:
        return 0
    pad = max(2, round(0.02 * image.shape[1]))
    clear = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
    return burn_text(rng, image, clear, words)


def render_frontal(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    findings: dict[str, float] | None = None,
    devices: bool = False,
    words: list[str] | None = None,
    female: bool = False,
    layout: Layout | None = None,
    exposure: Exposure | None = None,
) -> Radiograph:
    """Render a frontal chest radiograph look-alike.

    `findings` maps finding names (`findings.FINDINGS`, `TUBERCULOSIS`, `NODULE`) to a
    drawing strength; `devices` adds support devices; `words` are burned in outside the
    lungs. The masks are rasterised from the very polygons that were drawn.
    """
    findings = findings or {}
    # independent streams: adding a finding or text changes nothing else in the image
    frame_rng, anatomy_rng, scene_rng, finding_rng, device_rng, film_rng, text_rng = rng.spawn(7)
    frame = sample_frame(frame_rng, width, height, layout or Layout())
    changes = F.shape_changes(finding_rng, findings)
    anatomy = sample_anatomy(anatomy_rng, female=female, **changes)
    if "Fracture" in findings:
        F.break_rib(finding_rng, anatomy.posterior_ribs, findings["Fracture"])
    scene = build_scene(scene_rng, frame, anatomy)
    F.draw(finding_rng, scene, findings)
    if devices:
        F.support_devices(device_rng, scene)
    image = expose(film_rng, scene, exposure or Exposure())
    right, left = scene.right_lung > 0.5, scene.left_lung > 0.5
    box = mask_box(right | left)
    return Radiograph(
        image=image,
        right_lung=right,
        left_lung=left,
        heart=scene.heart > 0.5,
        right_clavicle=frame.fill([anatomy.right_clavicle]) > 0.5,
        left_clavicle=frame.fill([anatomy.left_clavicle]) > 0.5,
        lung_box=box,
        words=_burn(text_rng, image, box, words or []),
    )


# Lateral view: x runs from the anterior chest wall (-1, image left) to the back (+1).
_LATERAL_LUNG = [
    (0.05, -0.02), (-0.45, 0.08), (-0.80, 0.35), (-0.90, 0.70), (-0.88, 0.92),
    (-0.55, 0.86), (0.0, 0.82), (0.50, 0.93), (0.88, 1.08), (0.95, 0.60), (0.80, 0.20), (0.40, 0.0),
]  # fmt: skip
_LATERAL_BODY = [
    (-0.35, -3.0), (0.55, -3.0), (0.6, -0.4), (1.1, -0.1), (1.2, 0.5), (1.15, 1.5), (1.2, 3.0),
    (-1.0, 3.0), (-1.15, 1.5), (-1.12, 0.5), (-1.0, -0.1), (-0.45, -0.4),
]  # fmt: skip
_PARENCHYMA = ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")


def render_lateral(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    findings: dict[str, float] | None = None,
    words: list[str] | None = None,
    exposure: Exposure | None = None,
) -> Radiograph:
    """A simpler side view: one lung field, heart in front, spine behind, raised arms.

    Parenchymal findings show as patchy opacities, an effusion fills the posterior
    costophrenic recess. Lateral views carry no masks (all masks are empty).
    """
    findings = findings or {}
    frame = sample_frame(rng, width, height, Layout(box_width=(0.62, 0.78), aspect=(0.75, 0.9)))
    jitter = rng.normal(0, 0.015, (len(_LATERAL_LUNG), 2))
    lung_outline = closed_spline(np.array(_LATERAL_LUNG) + jitter, 8)
    lung = frame.fill([lung_outline])
    heart_centre = np.array([-0.45 + rng.uniform(-0.05, 0.05), 0.68])
    heart_size = rng.uniform(0.36, 0.44) * (1 + 0.25 * min(findings.get("Cardiomegaly", 0), 1.5))
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    heart_outline = heart_centre + np.stack([np.cos(angles) * heart_size, np.sin(angles) * 0.26], 1)
    heart = frame.fill([heart_outline])
    body = frame.fill([closed_spline(np.array(_LATERAL_BODY), 6)])
    arm = np.array([[0.3, -0.2], [-0.6, -0.7], [-1.6, -1.1]])

    scene = Scene.blank(frame, None, lung, np.zeros_like(lung), heart, body)
    unit = frame.unit
    depth = cv2.distanceTransform((body > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / (0.9 * unit)
    thickness = np.sqrt(np.clip(depth, 0, 1)) * (0.7 + 0.4 * np.clip(scene.y + 0.3, 0, 1.7) / 1.7)
    arms = frame.polyline(np.zeros_like(lung), arm, 0.5, 1.0)
    tissue = 2.4 * thickness + 0.5 * scene.blur(arms, 0.08)
    air = scene.blur(lung, 0.03) * (0.3 + 0.7 * scene.blur(lung, 0.2))
    air *= 1 - 0.4 * scene.blur(heart, 0.06)
    air *= 1 - 0.25 * np.clip(scene.y, 0, 1)  # the bases overlap the diaphragm and soft tissue
    scene.tissue = tissue * (1 - 0.75 * air)

    bone = np.zeros_like(lung)
    for level in np.arange(-0.6, 1.6, 0.1):  # vertebral bodies along a gentle kyphosis
        centre = np.array([0.82 + 0.08 * level**2, level])
        frame.fill(
            [centre + np.array([[-0.11, -0.04], [0.11, -0.04], [0.11, 0.04], [-0.11, 0.04]])],
            0.25,
            bone,
        )
    ribs = [
        np.array([[0.85, y], [0.1, y + 0.25], [-0.85, y + 0.45]]) for y in np.arange(-0.1, 0.9, 0.1)
    ]
    frame.polylines(bone, [open_spline(rib, 6) for rib in ribs], 0.05, 0.08)
    frame.polyline(bone, np.array([[-0.97, 0.0], [-1.02, 0.6]]), 0.05, 0.5)
    frame.polyline(bone, arm + [0.05, 0.0], 0.12, 0.4)
    scene.bone = scene.blur(bone, 0.012)
    hilum = scene.blob((0.1, 0.45), 0.25, 0.2)
    scene.markings = 0.05 * gaussian_noise_field(rng, lung.shape, 0.04 * unit) + 0.2 * hilum
    for name in _PARENCHYMA:
        if name in findings:
            centre = np.array([rng.uniform(-0.5, 0.6), rng.uniform(0.3, 0.8)])
            scene.opacity += F.patches(rng, scene, -1, centre, 4, 0.08, 0.08, 0.35 * findings[name])
    if "Pleural Effusion" in findings:
        recess = lung * np.clip((scene.y - 0.9 + 0.25 * np.clip(scene.x, 0, 1)) / 0.04, 0, 1)
        scene.opacity += 0.8 * findings["Pleural Effusion"] * scene.blur(recess, 0.01)
    image = expose(rng, scene, exposure or Exposure())
    empty = np.zeros(lung.shape, bool)
    box = mask_box(lung > 0.5)
    return Radiograph(
        image=image,
        right_lung=empty,
        left_lung=empty,
        heart=empty,
        right_clavicle=empty,
        left_clavicle=empty,
        lung_box=box,
        words=_burn(rng, image, box, words or []),
    )
