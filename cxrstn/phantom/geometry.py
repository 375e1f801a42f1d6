"""Chest anatomy as shapes in thorax coordinates, and the frame that places them in an image.

Thorax coordinates: x runs from -1 to 1 across the inside of the rib cage (negative x is
the image left, the patient's right, as in a PA radiograph); y is 0 at the lung apices and
1 at the right costophrenic angle. Every shape is sampled here once, and both the drawing
and the masks are rasterised from the same polygons, so masks match the drawn lungs exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SUBPIXEL_BITS = 4  # cv2 fixed-point drawing: polygons are placed to 1/16 pixel


def closed_spline(points: np.ndarray, samples_per_segment: int = 8) -> np.ndarray:
    """Closed Catmull-Rom curve through `points` (N x 2), densely sampled."""
    p = np.asarray(points, dtype=np.float64)
    p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)
    t = np.linspace(0, 1, samples_per_segment, endpoint=False)[:, None, None]
    curve = 0.5 * (
        2 * p1
        + (-p0 + p2) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )
    return curve.transpose(1, 0, 2).reshape(-1, 2)


def open_spline(points: np.ndarray, samples_per_segment: int = 8) -> np.ndarray:
    """Open Catmull-Rom curve through `points` (N x 2), end points repeated."""
    p = np.asarray(points, dtype=np.float64)
    padded = np.vstack([p[:1], p, p[-1:]])
    t = np.linspace(0, 1, samples_per_segment, endpoint=False)[:, None, None]
    p0, p1, p2, p3 = padded[:-3], padded[1:-2], padded[2:-1], padded[3:]
    curve = 0.5 * (
        2 * p1
        + (-p0 + p2) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )
    return np.vstack([curve.transpose(1, 0, 2).reshape(-1, 2), p[-1:]])


def band_polygon(center: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Closed outline of a band of varying half width around an open centre line."""
    tangent = np.gradient(center, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-12
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    offset = normal * np.asarray(half_width, dtype=np.float64).reshape(-1, 1)
    return np.vstack([center + offset, (center - offset)[::-1]])


@dataclass
class Frame:
    """Affine map from thorax coordinates to pixel coordinates of one image."""

    matrix: np.ndarray  # 2 x 3: pixel = matrix @ (x, y, 1)
    width: int
    height: int
    exposed_rows: int | None = None  # rows below this were outside the X-ray field (black)

    @property
    def unit(self) -> float:
        """Pixels per thorax x unit (half the rib cage width in pixels)."""
        return float(np.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    def to_px(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points) @ self.matrix[:, :2].T + self.matrix[:, 2]

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Thorax coordinates (x, y) of every pixel centre, each height x width float32."""
        inverse = cv2.invertAffineTransform(self.matrix)
        cols = np.arange(self.width, dtype=np.float32)[None, :]
        rows = np.arange(self.height, dtype=np.float32)[:, None]
        x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
        y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
        return x.astype(np.float32), y.astype(np.float32)

    def fill(self, polygons: list[np.ndarray], value: float = 1.0, canvas=None) -> np.ndarray:
        """Rasterise filled polygons (thorax coordinates) onto a float32 canvas."""
        if canvas is None:
            canvas = np.zeros((self.height, self.width), np.float32)
        scale = 1 << SUBPIXEL_BITS
        for polygon in polygons:  # one call each: fillPoly treats overlaps as even-odd
            pts = np.round(self.to_px(polygon) * scale).astype(np.int32)
            cv2.fillPoly(canvas, [pts], float(value), cv2.LINE_8, SUBPIXEL_BITS)
        return canvas

    def polyline(self, canvas: np.ndarray, line: np.ndarray, thickness: float, value: float):
        """Draw an open polyline (thorax coordinates), thickness in x units."""
        return self.polylines(canvas, [line], thickness, value)

    def polylines(self, canvas: np.ndarray, lines, thickness: float, value: float):
        """Draw several open polylines of one thickness and value in one call."""
        scale = 1 << SUBPIXEL_BITS
        if isinstance(lines, np.ndarray):  # n x points x 2: transform all at once
            pts = list(np.round(self.to_px(lines) * scale).astype(np.int32))
        else:
            pts = [np.round(self.to_px(line) * scale).astype(np.int32) for line in lines]
        width_px = max(1, round(thickness * self.unit))
        cv2.polylines(canvas, pts, False, float(value), width_px, cv2.LINE_8, SUBPIXEL_BITS)
        return canvas


@dataclass
class Layout:
    """Where the thorax sits in the image, as ranges of fractions of the image size."""

    box_width: tuple[float, float] = (0.56, 0.84)  # rib cage width / image width
    aspect: tuple[float, float] = (0.82, 1.30)  # lung height / rib cage width
    top: tuple[float, float] = (0.02, 0.27)  # space above the apices / image height
    shift: float = 0.06  # largest horizontal offset of the midline / image width
    rotation_deg: float = 3.0  # largest rotation
    exposed_height: tuple[float, float] = (1.0, 1.0)  # share of the height that is exposed


def sample_frame(rng: np.random.Generator, width: int, height: int, layout: Layout) -> Frame:
    """Random position, scale, aspect and slight rotation of the thorax.

    The default ranges spread the lung box a little more than real lung masks do
    (Shenzhen, Montgomery: box centre height std 0.06 and box height std 0.10 of the image
    height, box width mean 0.70 of the image width), since ward and emergency films vary
    more than screening sets. The margin below the lungs (abdomen) comes out the widest.
    """
    exposed = height * rng.uniform(*layout.exposed_height)
    half_width = 0.5 * width * rng.uniform(*layout.box_width)
    lung_height = 2 * half_width * rng.uniform(*layout.aspect)
    top = exposed * rng.uniform(*layout.top)
    side_margin = 0.5 * width - half_width
    lowest_top = 0.5 * side_margin + 0.02 * height
    top = max(top, lowest_top)
    # the abdomen below the lungs gets at least 0.7 times the room of the neck above them
    room = exposed - top - lung_height
    if room < 0.7 * top:
        shrink = (exposed - 1.7 * top) / lung_height
        half_width *= shrink
        lung_height *= shrink
    angle = np.deg2rad(rng.uniform(-layout.rotation_deg, layout.rotation_deg))
    cx = 0.5 * width + width * rng.uniform(-layout.shift, layout.shift)
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([half_width, lung_height])
    matrix = np.hstack([linear, [[cx], [top]]])
    exposed_rows = round(exposed) if exposed < height else None
    return Frame(matrix=matrix, width=width, height=height, exposed_rows=exposed_rows)


@dataclass
class Anatomy:
    """One patient's chest, in thorax coordinates."""

    right_lung: np.ndarray  # image left
    left_lung: np.ndarray  # image right
    heart: np.ndarray
    mediastinum: np.ndarray
    body: list[np.ndarray]
    right_clavicle: np.ndarray
    left_clavicle: np.ndarray
    posterior_ribs: list[np.ndarray]
    anterior_ribs: list[np.ndarray]
    scapulae: list[np.ndarray]
    humeri: list[tuple[np.ndarray, float]]  # head centre and radius
    hila: np.ndarray  # 2 x 2: right hilum, left hilum
    carina: np.ndarray
    stomach: np.ndarray  # centre of the gastric air bubble
    spine_half_width: float
    breasts: list[np.ndarray] = field(default_factory=list)


def _jitter(rng: np.random.Generator, points: list, scale: float) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    return p + rng.normal(0, scale, p.shape)


def _lung(rng, side: int, dome: float, dome_peak: float, medial: list) -> np.ndarray:
    """Lung outline for one side (side -1 image left, +1 image right)."""
    bottom = 1.0 + dome
    lateral = [
        (0.42, -0.01),  # apex
        (0.58, 0.01),
        (0.74, 0.07),
        (0.86, 0.17),
        (0.93, 0.32),
        (0.97, 0.52),
        (0.99, 0.72),
        (0.99, 0.87 + 0.8 * dome),
        (0.98, bottom),  # costophrenic angle
        (0.92, bottom - 0.10 + 0.5 * dome_peak),
        (0.78, bottom - 0.19 + dome_peak),
        (0.58, bottom - 0.23 + dome_peak),
        (0.38, bottom - 0.19 + dome_peak),
    ]
    points = _jitter(rng, lateral, 0.01)
    points = np.vstack([points, np.asarray(medial, dtype=np.float64)])
    points[:, 0] *= side
    return closed_spline(points, 10)


def sample_anatomy(
    rng: np.random.Generator,
    heart_scale: float = 1.0,
    mediastinum_scale: float = 1.0,
    dome_raise: tuple[float, float] = (0.0, 0.0),
    female: bool = False,
) -> Anatomy:
    """Sample a chest: organ sizes and shapes vary a little between patients.

    `heart_scale` enlarges the heart (cardiomegaly), `mediastinum_scale` widens the upper
    mediastinum, `dome_raise` lifts the right/left hemidiaphragm (volume loss).
    """
    right_dome = rng.uniform(-0.03, 0.02) - dome_raise[0]
    left_dome = right_dome + rng.uniform(0.02, 0.06) - dome_raise[1]
    peak = rng.uniform(-0.03, 0.03)
    medial_width = rng.uniform(0.10, 0.14) * mediastinum_scale
    bottom = 1.0 + right_dome
    right_medial = [
        (0.20, bottom - 0.09),
        (0.22, 0.72),
        (0.19, 0.55),
        (medial_width + 0.02, 0.38),
        (medial_width, 0.22),
        (medial_width + 0.04, 0.08),
        (0.24, 0.01),
    ]
    right_lung = _lung(rng, -1, right_dome, peak, right_medial)
    bottom = 1.0 + left_dome
    left_medial = [
        (0.28, bottom - 0.10),
        (0.22, 0.70),
        (0.20, 0.50),
        (medial_width + 0.08, 0.30),
        (medial_width + 0.02, 0.20),
        (medial_width + 0.04, 0.08),
        (0.22, 0.02),
    ]
    left_lung = _lung(rng, 1, left_dome, peak + rng.uniform(-0.02, 0.02), left_medial)

    heart_width = rng.uniform(0.36, 0.44) * heart_scale  # cardiothoracic ratio ~0.45
    right_border = -0.36 * heart_width - 0.04
    left_border = right_border + 2 * heart_width
    heart_top = 0.42 + rng.uniform(-0.03, 0.03)
    heart_bottom = 1.0 + 0.5 * (right_dome + left_dome) + 0.02
    heart = closed_spline(
        _jitter(
            rng,
            [
                (right_border + 0.06, heart_top + 0.12),
                (right_border, heart_bottom - 0.25),
                (right_border + 0.03, heart_bottom - 0.08),
                (0.1, heart_bottom),
                (left_border - 0.10, heart_bottom - 0.02),
                (left_border, heart_bottom - 0.12),  # the apex sits on the left dome
                (left_border - 0.03, heart_bottom - 0.30),  # convex left ventricle
                (0.8 * left_border, heart_top + 0.13),  # left atrial appendage
                (0.45 * left_border, heart_top + 0.02),
                (0.15, heart_top),
            ],
            0.01,
        ),
        8,
    )
    aorta = 0.18 * mediastinum_scale + rng.uniform(-0.02, 0.03)
    mediastinum = closed_spline(
        np.array(
            [
                (-medial_width - 0.02, -0.30),
                (-medial_width - 0.01, 0.25),
                (-medial_width - 0.05, heart_top + 0.12),
                (0.1, heart_top + 0.10),
                (aorta, 0.34),
                (aorta + 0.02, 0.26),
                (medial_width + 0.02, 0.18),
                (medial_width, -0.30),
            ]
        ),
        8,
    )
    neck = rng.uniform(0.26, 0.34)
    shoulder = rng.uniform(1.20, 1.32)
    flank = rng.uniform(1.04, 1.12)
    trapezius = rng.uniform(-0.05, 0.05)
    half = [
        (neck, -3.0),
        (neck + 0.02, -0.55),
        (neck + 0.12, -0.42 + trapezius),
        (0.70, -0.30 + trapezius),
        (1.02, -0.19),
        (shoulder, -0.09),
        (flank + 0.04, 0.35),
        (flank, 0.9),
        (flank + 0.04, 1.6),
        (flank + 0.12, 3.0),
    ]
    right = np.asarray(half)
    torso = np.vstack([right, (right * [-1, 1])[::-1]])
    body = [torso]
    arm_gap = rng.uniform(0.05, 0.25)
    for side in (-1, 1):
        arm = np.array(
            [
                (shoulder - 0.10, -0.11),
                (shoulder + 0.12, -0.04),
                (shoulder + arm_gap + 0.35, 0.15),
                (shoulder + arm_gap + 0.45, 0.8),
                (shoulder + arm_gap + 0.50, 3.0),
                (flank + arm_gap + 0.15, 3.0),
                (flank + arm_gap + 0.05, 0.6),
                (flank + 0.02, 0.25),
            ]
        )
        arm[:, 0] *= side
        body.append(closed_spline(arm, 6))

    clavicles = []
    clavicle_y = rng.uniform(-0.02, 0.05)
    clavicle_tilt = rng.uniform(0.12, 0.24)
    for side in (-1, 1):
        center = open_spline(
            _jitter(
                rng,
                [
                    (0.09, clavicle_y + 0.05),
                    (0.30, clavicle_y - 0.01),
                    (0.60, clavicle_y - 0.55 * clavicle_tilt),
                    (0.92, clavicle_y - clavicle_tilt - 0.02),
                    (1.14, clavicle_y - clavicle_tilt + 0.01),
                ],
                0.008,
            ),
            8,
        )
        center[:, 0] *= side
        half = np.interp(
            np.linspace(0, 1, len(center)), [0, 0.15, 0.7, 1], [0.05, 0.035, 0.03, 0.038]
        )
        clavicles.append(band_polygon(center, half))

    posterior, anterior = _ribs(rng)
    scapulae = []
    for side in (-1, 1):
        scapula = np.array([(0.98, -0.08), (1.22, -0.16), (1.12, 0.55), (1.02, 0.42)])
        scapula[:, 0] *= side
        scapulae.append(closed_spline(_jitter(rng, scapula, 0.015), 6))
    humeri = [
        (np.array([side * (shoulder + 0.05), rng.uniform(-0.1, 0.0)]), rng.uniform(0.14, 0.18))
        for side in (-1, 1)
    ]
    breasts = []
    if female:
        size = rng.uniform(0.35, 0.55)
        for side in (-1, 1):
            centre = np.array([side * rng.uniform(0.55, 0.7), 0.95 + rng.uniform(-0.05, 0.05)])
            angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            ellipse = np.stack([np.cos(angles) * size, np.sin(angles) * size * 0.6], 1)
            breasts.append(ellipse + centre)
    return Anatomy(
        right_lung=right_lung,
        left_lung=left_lung,
        heart=heart,
        mediastinum=mediastinum,
        body=body,
        right_clavicle=clavicles[0],
        left_clavicle=clavicles[1],
        posterior_ribs=posterior,
        anterior_ribs=anterior,
        scapulae=scapulae,
        humeri=humeri,
        hila=np.array([[-0.26, 0.45], [0.24, 0.42]]) + rng.normal(0, 0.02, (2, 2)),
        carina=np.array([0.0, 0.33 + rng.uniform(-0.03, 0.03)]),
        stomach=np.array([rng.uniform(0.35, 0.6), 1.0 + left_dome + rng.uniform(0.05, 0.1)]),
        spine_half_width=rng.uniform(0.075, 0.095),
        breasts=breasts,
    )


def _ribs(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Posterior rib arcs (spine to lateral wall) and anterior ribs (lateral wall to sternum).

    Posterior ribs rise slightly from the spine and bend down at the lateral chest wall;
    anterior ribs run from the lateral wall down and inwards to the costal cartilage.
    """
    posterior, anterior = [], []
    spacing = rng.uniform(0.085, 0.10)
    start = rng.uniform(-0.10, -0.06)
    for side in (-1, 1):
        levels = start + np.cumsum(
            spacing * (1 + 0.025 * np.arange(11)) * rng.uniform(0.9, 1.1, 11)
        )
        for k, y0 in enumerate(levels - levels[0] + start):
            if k == 0:  # the first rib: a tight arc around the apex
                arc = [
                    (0.07, y0),
                    (0.25, y0 - 0.06),
                    (0.48, y0 - 0.02),
                    (0.60, y0 + 0.08),
                    (0.48, y0 + 0.16),
                    (0.26, y0 + 0.17),
                ]
                posterior.append(open_spline(np.array(arc) * [side, 1], 4))
                continue
            reach = 1.0 + 0.01 * min(k, 6)
            back = [
                (0.07, y0),
                (0.32, y0 - 0.05),
                (0.62, y0 - 0.025),
                (0.87, y0 + 0.06),
                (reach, y0 + 0.19),
            ]
            line = open_spline(_jitter(rng, back, 0.004), 4)
            posterior.append(line * [side, 1])
            if k < 9:
                front = [
                    (reach, y0 + 0.19),
                    (reach - 0.05, y0 + 0.27),
                    (0.78, y0 + 0.34),
                    (0.55, y0 + 0.42),
                    (0.32, y0 + 0.48),
                ]
                anterior.append(open_spline(_jitter(rng, front, 0.004), 4) * [side, 1])
    return posterior, anterior
