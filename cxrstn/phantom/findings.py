"""The 12 CheXpert findings, support devices, tuberculosis and nodules, drawn where they belong.

Each finding gets a strength: 1 for a positive label, less for an uncertain one, times
`phantom.finding_contrast`. Shape changes (enlarged heart or mediastinum, raised
hemidiaphragm, broken rib) are applied to the sampled anatomy before rasterisation by
`shape_changes`; everything else adds or removes attenuation on the scene by `draw`.
"""

from __future__ import annotations

import cv2
import numpy as np

from cxrstn.phantom.geometry import open_spline
from cxrstn.phantom.render import Scene, gaussian_noise_field
from cxrstn.sources import chexpert

FINDINGS = tuple(chexpert.FINDINGS)  # drawn in the CSV order
SUPPORT_DEVICES = "Support Devices"
TUBERCULOSIS = "Tuberculosis"
NODULE = "Nodule"


def shape_changes(rng: np.random.Generator, findings: dict[str, float]) -> dict:
    """Keyword arguments of `geometry.sample_anatomy` for the findings that change shapes."""
    changes = {}
    if "Cardiomegaly" in findings:
        changes["heart_scale"] = 1 + 0.35 * min(findings["Cardiomegaly"], 1.5)
    if "Enlarged Cardiomediastinum" in findings:
        changes["mediastinum_scale"] = 1 + 0.8 * min(findings["Enlarged Cardiomediastinum"], 1.5)
    if "Atelectasis" in findings:
        raised = np.zeros(2)
        raised[rng.integers(2)] = 0.08 * min(findings["Atelectasis"], 1.5)
        changes["dome_raise"] = tuple(raised)
    return changes


def break_rib(rng: np.random.Generator, ribs: list[np.ndarray], strength: float) -> None:
    """Fracture: cut one rib in its lateral half, leave a gap and shift the outer piece."""
    per_side = len(ribs) // 2
    index = int(rng.integers(2) * per_side + rng.integers(3, per_side - 2))
    rib = ribs.pop(index)
    cut = int(rng.integers(len(rib) // 2, len(rib) - 2))
    offset = np.array([0.0, rng.choice([-1, 1]) * rng.uniform(0.012, 0.025) * min(strength, 1.5)])
    ribs.append(rib[:cut])
    ribs.append(rib[cut + 1 :] + offset)


def draw(rng: np.random.Generator, scene: Scene, findings: dict[str, float]) -> None:
    """Draw every finding of `findings` (name -> strength) onto the scene."""
    for name, strength in findings.items():
        painter = PAINTERS.get(name)
        if painter is not None and strength > 0:
            painter(rng, scene, strength)


# ---------------------------------------------------------------- helpers


def _lung_mask(scene: Scene, side: int) -> np.ndarray:
    return scene.right_lung if side < 0 else scene.left_lung


def _lung_point(
    rng, scene: Scene, side: int | None = None, y_range=(0.0, 1.2)
) -> tuple[int, np.ndarray]:
    """A random point inside a lung (side -1 image left, +1 image right) within a y band."""
    if side is None:
        side = int(rng.choice([-1, 1]))
    mask = _lung_mask(scene, side)
    band = (mask > 0.5) & (scene.y >= y_range[0]) & (scene.y <= y_range[1])
    candidates = np.flatnonzero(band)
    if candidates.size == 0:
        candidates = np.flatnonzero(mask > 0.5)
    pixel = candidates[rng.integers(candidates.size)]
    return side, np.array([scene.x.flat[pixel], scene.y.flat[pixel]])


def patches(rng, scene: Scene, side, centre, count, spread, size, amplitude) -> np.ndarray:
    """A cluster of soft blobs with a mottled texture, kept inside the lung."""
    layer = np.zeros_like(scene.tissue)
    for _ in range(count):
        point = centre + rng.normal(0, spread, 2) * [1, 0.8]
        radius = size * rng.uniform(0.6, 1.3)
        layer += rng.uniform(0.6, 1.0) * scene.blob(point, radius, radius * 0.8)
    mottle = 1 + 0.2 * gaussian_noise_field(rng, layer.shape, 0.03 * scene.frame.unit)
    inside = scene.blur(_lung_mask(scene, side), 0.015)
    return amplitude * np.clip(layer, 0, 1.3) * mottle * inside


# ---------------------------------------------------------------- findings


def _lung_opacity(rng, scene: Scene, s: float) -> None:
    for _ in range(rng.integers(1, 3)):
        side, centre = _lung_point(rng, scene, y_range=(0.2, 0.95))
        count = int(rng.integers(2, 5))
        scene.opacity += patches(rng, scene, side, centre, count, 0.09, 0.12, 0.5 * s)


def _lung_lesion(rng, scene: Scene, s: float) -> None:
    for _ in range(rng.integers(1, 3)):
        _, centre = _lung_point(rng, scene, y_range=(0.1, 0.85))
        _nodule(rng, scene, centre, rng.uniform(0.045, 0.1), 0.35 * s)


def _nodule(rng, scene: Scene, centre, radius: float, amplitude: float) -> None:
    """A round, well-defined opacity with a slightly lobulated edge."""
    angle = np.arctan2(scene.y - centre[1], scene.x - centre[0])
    lobes = 1 + 0.08 * np.sin(rng.integers(3, 6) * angle + rng.uniform(0, 6.3))
    d = np.hypot(scene.x - centre[0], (scene.y - centre[1]) * 1.6) / (radius * lobes)
    ball = np.sqrt(np.clip(1 - d**2, 0, 1))
    scene.opacity += amplitude * scene.blur(ball.astype(np.float32), 0.004)


def _edema(rng, scene: Scene, s: float) -> None:
    """Perihilar 'bat wing' haze on both sides, Kerley B lines at the bases."""
    haze = np.zeros_like(scene.tissue)
    for hilum in scene.anatomy.hila:
        haze += scene.blob(hilum + [np.sign(hilum[0]) * 0.12, 0.05], 0.32, 0.28)
    mottle = 1 + 0.25 * gaussian_noise_field(rng, haze.shape, 0.02 * scene.frame.unit)
    scene.opacity += 0.32 * s * haze * mottle * scene.blur(scene.lungs, 0.02)
    lines = np.zeros_like(scene.tissue)
    for side in (-1, 1):
        for _ in range(rng.integers(3, 7)):
            y = rng.uniform(0.65, 0.92)
            x = side * rng.uniform(0.85, 0.95)
            segment = np.array([[x, y], [x - side * rng.uniform(0.08, 0.14), y]])
            scene.frame.polyline(lines, segment, 0.008, 1.0)
    scene.opacity += 0.25 * s * lines * scene.lungs
    scene.markings *= 1 + 0.5 * min(s, 1.5)


def _consolidation(rng, scene: Scene, s: float) -> None:
    """Dense lobar opacity bounded by a fissure, with air bronchograms."""
    side = int(rng.choice([-1, 1]))
    lower = rng.random() < 0.7
    fissure = rng.uniform(0.45, 0.6) if lower else rng.uniform(0.3, 0.45)
    mask = _lung_mask(scene, side)
    region = mask * (scene.y > fissure if lower else scene.y < fissure)
    # only part of the lobe: fade towards a random lateral or medial edge
    fade = np.clip(1 - np.abs(np.abs(scene.x) - rng.uniform(0.45, 0.75)) / 0.45, 0, 1)
    dense = scene.blur(region.astype(np.float32) * fade, 0.025)
    mottle = 1 + 0.2 * gaussian_noise_field(rng, dense.shape, 0.02 * scene.frame.unit)
    bronchi = np.zeros_like(dense)
    hilum = scene.anatomy.hila[0 if side < 0 else 1]
    for angle in rng.uniform(-0.6, 1.2, 3):
        end = hilum + rng.uniform(0.25, 0.4) * np.array([side * np.cos(angle), 1.6 * np.sin(angle)])
        scene.frame.polyline(bronchi, np.array([hilum, end]), 0.012, 1.0)
    scene.opacity += 0.6 * s * dense * mottle * (1 - 0.5 * scene.blur(bronchi, 0.004))


def _pneumonia(rng, scene: Scene, s: float) -> None:
    """Patchy, ill-defined airspace opacities clustered in one zone."""
    side, centre = _lung_point(rng, scene, y_range=(0.35, 0.95))
    count = int(rng.integers(5, 10))
    scene.opacity += patches(rng, scene, side, centre, count, 0.1, 0.08, 0.4 * s)


def _atelectasis(rng, scene: Scene, s: float) -> None:
    """Plate-like linear opacity and a basal wedge (the raised dome comes from shape_changes)."""
    side, centre = _lung_point(rng, scene, y_range=(0.6, 0.85))
    half = rng.uniform(0.12, 0.22)
    tilt = rng.uniform(-0.06, 0.06)
    plate = np.array([centre - [half, tilt], centre + [half, tilt]])
    lines = scene.frame.polyline(np.zeros_like(scene.tissue), plate, 0.02, 1.0)
    wedge = scene.blob(centre + [0, 0.12], 0.2, 0.08)
    mask = scene.blur(_lung_mask(scene, side), 0.01)
    scene.opacity += s * (0.45 * scene.blur(lines, 0.006) + 0.3 * wedge) * mask


def _pneumothorax(rng, scene: Scene, s: float) -> None:
    """Air between lung and chest wall: no lung markings, darker, a thin visceral pleural line."""
    side = int(rng.choice([-1, 1]))
    mask = (_lung_mask(scene, side) > 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3) / scene.frame.unit
    gap = rng.uniform(0.06, 0.16) * min(s, 1.5)
    # the air collects apically and laterally, not along the mediastinum
    outer = np.clip((np.abs(scene.x) - 0.45) / 0.2, 0, 1) + np.clip((0.35 - scene.y) / 0.2, 0, 1)
    outer = np.clip(outer, 0, 1)
    zone = (depth < gap * outer) & (mask > 0)
    zone_soft = scene.blur(zone.astype(np.float32), 0.004)
    scene.markings *= 1 - zone_soft
    scene.tissue *= 1 - 0.35 * min(s, 1.5) * zone_soft
    pleura = np.abs(depth - gap * outer) < (1.0 / scene.frame.unit)
    line = (pleura & (mask > 0) & (outer > 0.3)).astype(np.float32)
    scene.opacity += 0.3 * min(s, 1.5) * scene.blur(line, 0.003)


def _pleural_effusion(rng, scene: Scene, s: float) -> None:
    """Fluid at the lung base: blunted costophrenic angle with a meniscus rising laterally."""
    sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.65 else [-1, 1]
    for side in sides:
        mask = _lung_mask(scene, side)
        if not (mask > 0.5).any():
            continue
        base = float(scene.y[mask > 0.5].max())
        height = rng.uniform(0.3, 0.6) * min(s, 1.5) ** 0.5
        level = base - height * (0.45 + 0.55 * np.clip(np.abs(scene.x) / 0.97, 0, 1) ** 3)
        fluid = mask * np.clip((scene.y - level) / 0.08, 0, 1)
        scene.opacity += 0.85 * min(s, 1.5) * scene.blur(fluid.astype(np.float32), 0.02)
        scene.markings *= 1 - 0.8 * fluid


def _pleural_other(rng, scene: Scene, s: float) -> None:
    """Pleural thickening along the lateral chest wall, or calcified pleural plaques."""
    side = int(rng.choice([-1, 1]))
    mask = (_lung_mask(scene, side) > 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3) / scene.frame.unit
    if rng.random() < 0.6:
        y0 = rng.uniform(0.0, 0.5)
        band = (depth < rng.uniform(0.04, 0.07)) & (mask > 0) & (np.abs(scene.x) > 0.6)
        band &= (scene.y > y0) & (scene.y < y0 + rng.uniform(0.25, 0.5))
        scene.opacity += 0.6 * s * scene.blur(band.astype(np.float32), 0.012)
    else:
        for _ in range(rng.integers(2, 5)):
            _, centre = _lung_point(rng, scene, side, (0.3, 0.95))
            centre = centre * [1.12 if abs(centre[0]) > 0.6 else 1.0, 1.0]
            scene.opacity += 0.6 * s * scene.blob(centre, 0.05, 0.025) * (mask > 0)


def _tuberculosis(rng, scene: Scene, s: float) -> None:
    """Upper-zone patchy infiltrates, cavities, fibrotic streaks, sometimes a small effusion."""
    sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.5 else [-1, 1]
    for side in sides:
        _, centre = _lung_point(rng, scene, side, (0.05, 0.4))
        scene.opacity += patches(
            rng, scene, side, centre, int(rng.integers(4, 9)), 0.08, 0.06, 0.4 * s
        )
        if rng.random() < 0.4:
            ring = scene.blob(centre, 0.07, 0.05) - 1.4 * scene.blob(centre, 0.04, 0.03)
            scene.opacity += 0.35 * s * np.clip(ring, -0.5, 1)
        hilum = scene.anatomy.hila[0 if side < 0 else 1]
        streaks = np.zeros_like(scene.tissue)
        for _ in range(rng.integers(2, 4)):
            end = centre + rng.normal(0, 0.06, 2)
            scene.frame.polyline(streaks, np.array([hilum, end]), 0.01, 1.0)
        scene.opacity += 0.2 * s * scene.blur(streaks, 0.005) * _lung_mask(scene, side)
    if rng.random() < 0.15:
        _pleural_effusion(rng, scene, 0.5 * s)


def _jsrt_nodule(rng, scene: Scene, s: float) -> None:
    _, centre = _lung_point(rng, scene, y_range=(0.1, 0.85))
    _nodule(rng, scene, centre, rng.uniform(0.03, 0.07), rng.uniform(0.15, 0.4) * s)


# ---------------------------------------------------------------- support devices


def support_devices(rng: np.random.Generator, scene: Scene) -> None:
    """Lines, tubes, electrodes, a pacemaker or sternotomy wires (not an abnormality)."""
    kinds = ["electrodes", "central line", "tube", "pacemaker", "sternotomy"]
    chosen = rng.choice(
        kinds, size=rng.integers(1, 4), replace=False, p=[0.3, 0.25, 0.2, 0.1, 0.15]
    )
    frame, metal = scene.frame, scene.metal
    for kind in chosen:
        if kind == "electrodes":
            for _ in range(rng.integers(2, 6)):
                centre = np.array([rng.uniform(-1.1, 1.1), rng.uniform(-0.3, 1.2)])
                ring = np.hypot(scene.x - centre[0], (scene.y - centre[1]) * 1.6)
                metal += 0.9 * (np.abs(ring - 0.035) < 0.008) + 0.3 * (ring < 0.027)
                wire = [
                    centre,
                    centre + rng.normal(0, 0.3, 2),
                    [np.sign(centre[0]) * 2.0, rng.uniform(-1, 2)],
                ]
                frame.polyline(metal, open_spline(np.array(wire), 10), 0.008, 0.6)
        elif kind == "central line":
            side = rng.choice([-1, 1])
            path = [
                [side * 0.9, -0.35],
                [side * 0.55, -0.12],
                [side * 0.1, 0.05],
                [-0.07, 0.25],
                [-0.07, rng.uniform(0.35, 0.5)],
            ]
            frame.polyline(metal, open_spline(np.array(path), 10), 0.012, 0.8)
        elif kind == "tube":
            tip = scene.anatomy.carina[1] - rng.uniform(0.04, 0.12)
            frame.polyline(metal, np.array([[0.0, -2.0], [0.0, tip]]), 0.03, 0.5)
            if rng.random() < 0.5:  # nasogastric tube down to the stomach
                stomach = scene.anatomy.stomach
                path = [[0.03, -2.0], [0.03, 0.5], [0.06, 0.95], stomach + [0.05, 0.05]]
                frame.polyline(metal, open_spline(np.array(path), 10), 0.012, 0.7)
        elif kind == "pacemaker":
            box = np.array([rng.uniform(0.45, 0.75), rng.uniform(-0.12, 0.08)])
            device = (np.abs(scene.x - box[0]) < 0.1) & (np.abs(scene.y - box[1]) < 0.06)
            metal += 2.0 * scene.blur(device.astype(np.float32), 0.01)
            lead = [box, [0.3, 0.0], [-0.05, 0.3], [-0.1, 0.6], [0.15, 0.85]]
            frame.polyline(metal, open_spline(np.array(lead), 10), 0.012, 1.0)
        else:
            for y in np.linspace(0.1, 0.6, rng.integers(4, 7)):
                loop = np.hypot((scene.x - 0.0) / 0.03, (scene.y - y) / 0.025)
                metal += 1.2 * (np.abs(loop - 1) < 0.35)


PAINTERS = {
    "Lung Opacity": _lung_opacity,
    "Lung Lesion": _lung_lesion,
    "Edema": _edema,
    "Consolidation": _consolidation,
    "Pneumonia": _pneumonia,
    "Atelectasis": _atelectasis,
    "Pneumothorax": _pneumothorax,
    "Pleural Effusion": _pleural_effusion,
    "Pleural Other": _pleural_other,
    TUBERCULOSIS: _tuberculosis,
    NODULE: _jsrt_nodule,
}
