"""Rasterise a sampled chest into a radiograph look-alike with its exact masks.

The image is built as an attenuation map (soft tissue thickness, minus air in the lungs
and trachea, plus bone and metal), shown as film density 1 - exp(-attenuation), then
windowed, blurred and given film noise. Findings add or remove attenuation inside the
lungs or change the organ shapes before rasterisation (see `findings`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cxrstn.phantom.geometry import Anatomy, Frame


@dataclass
class Scene:
    """Per-pixel layers of one radiograph under construction (all height x width float32)."""

    frame: Frame
    anatomy: Anatomy | None  # None for a lateral view
    x: np.ndarray  # thorax coordinates of each pixel
    y: np.ndarray
    right_lung: np.ndarray  # 0/1, image left, heart and mediastinum removed
    left_lung: np.ndarray  # 0/1, image right
    heart: np.ndarray  # 0/1
    body: np.ndarray  # 0/1
    tissue: np.ndarray  # attenuation of soft tissue and air
    bone: np.ndarray  # attenuation of bone
    markings: np.ndarray  # lung vessels (shown only inside the lungs)
    opacity: np.ndarray  # findings that add density inside the thorax
    metal: np.ndarray  # support devices

    @classmethod
    def blank(cls, frame: Frame, anatomy, right_lung, left_lung, heart, body) -> Scene:
        """A scene with its masks set and every attenuation layer zero."""
        x, y = frame.coordinates()
        zeros = [np.zeros_like(x) for _ in range(5)]
        return cls(frame, anatomy, x, y, right_lung, left_lung, heart, body, *zeros)

    @property
    def lungs(self) -> np.ndarray:
        return np.maximum(self.right_lung, self.left_lung)

    def blur(self, image: np.ndarray, sigma_units: float) -> np.ndarray:
        """Gaussian blur with sigma given in thorax x units.

        Wide blurs run on a smaller copy and are interpolated back: same look, less time.
        """
        sigma = max(sigma_units * self.frame.unit, 0.3)
        factor = int(sigma / 3)
        if factor < 2:
            return cv2.GaussianBlur(image, (0, 0), sigma)
        height, width = image.shape
        small = cv2.resize(
            image, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA
        )
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel rows and columns covering the thorax-coordinate rectangle (clipped)."""
        corners = self.frame.to_px(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        c0, r0 = np.floor(corners.min(axis=0)).astype(int)
        c1, r1 = np.ceil(corners.max(axis=0)).astype(int) + 1
        height, width = self.x.shape
        return slice(max(r0, 0), min(r1, height)), slice(max(c0, 0), min(c1, width))

    def blob(self, centre, radius_x: float, radius_y: float) -> np.ndarray:
        """exp(-d^2) of the elliptic distance to `centre`, computed only where it is > 1e-4."""
        out = np.zeros_like(self.x)
        rows, cols = self.window(
            centre[0] - 3 * radius_x,
            centre[0] + 3 * radius_x,
            centre[1] - 3 * radius_y,
            centre[1] + 3 * radius_y,
        )
        dx = (self.x[rows, cols] - centre[0]) / radius_x
        dy = (self.y[rows, cols] - centre[1]) / radius_y
        out[rows, cols] = np.exp(-(dx * dx + dy * dy))
        return out


def gaussian_noise_field(rng, shape, sigma_px: float) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation.

    Coarse fields are drawn on a grid `factor` times smaller and interpolated up, which
    looks the same and costs a fraction of a full-size blur.
    """
    height, width = shape
    factor = max(1, int(sigma_px / 2))
    small = rng.standard_normal((height // factor + 2, width // factor + 2), dtype=np.float32)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / factor, 0.5))
    field = cv2.resize(
        small, (width + 2 * factor, height + 2 * factor), interpolation=cv2.INTER_LINEAR
    )
    field = field[factor : factor + height, factor : factor + width]
    return (field - field.mean()) / (field.std() + 1e-6)


def build_scene(rng: np.random.Generator, frame: Frame, anatomy: Anatomy) -> Scene:
    """Rasterise the normal anatomy: masks, soft tissue, air, bones and lung markings."""
    heart = frame.fill([anatomy.heart])
    mediastinum = frame.fill([anatomy.mediastinum])
    cut = np.maximum(heart, mediastinum)
    right_lung = frame.fill([anatomy.right_lung]) * (1 - cut)
    left_lung = frame.fill([anatomy.left_lung]) * (1 - cut)
    body = np.zeros((frame.height, frame.width), np.float32)
    for part in anatomy.body:
        frame.fill([part], 1.0, body)

    scene = Scene.blank(frame, anatomy, right_lung, left_lung, heart, body)
    _soft_tissue(rng, scene)
    _bones(scene)
    _markings(rng, scene)
    return scene


def _soft_tissue(rng, scene: Scene) -> None:
    frame, anatomy, unit = scene.frame, scene.anatomy, scene.frame.unit
    body8 = (scene.body > 0.5).astype(np.uint8)
    thickness = np.zeros_like(scene.body)
    for index, part in enumerate(anatomy.body):  # torso and arms overlap: thicknesses add
        part8 = frame.fill([part]).astype(np.uint8)
        depth = cv2.distanceTransform(part8, cv2.DIST_L2, 3) / (0.9 * unit)
        thickness += np.sqrt(np.clip(depth, 0, 1)) * (1.0 if index == 0 else 0.5)
    # the neck and shoulders are thinner than the chest, the abdomen thicker
    thickness *= 0.6 + 0.5 * np.clip(scene.y + 0.3, 0, 1.7) / 1.7
    tissue = 2.3 * thickness

    if anatomy.breasts:
        breasts = scene.blur(frame.fill(anatomy.breasts), 0.10)
        tissue += 0.22 * breasts * body8

    lungs = scene.lungs
    sharp = scene.blur(lungs, 0.015)
    broad = scene.blur(lungs, 0.14)
    air = sharp * (0.2 + 0.8 * broad)
    # the apices are overlapped by the first ribs and the soft tissue of the neck
    air *= np.clip(0.55 + (scene.y + 0.02) / 0.35, 0.55, 1.0)
    # the lung bases are overlapped by the diaphragm's posterior recesses
    air *= 1.0 - 0.22 * np.clip(scene.y - 0.55, 0, 1) / 0.45
    air *= 1.0 + 0.04 * gaussian_noise_field(rng, lungs.shape, 0.05 * unit)
    # the lungs also lie behind the heart, less deep
    air = np.maximum(air, 0.3 * scene.blur(scene.heart, 0.03) * broad)
    # air replaces most of the tissue along the beam where it crosses the lungs
    tissue *= 1.0 - 0.84 * air

    heart = scene.heart
    heart_depth = cv2.distanceTransform((heart > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    tissue += 0.15 * np.sqrt(np.clip(heart_depth / (0.15 * unit), 0, 1))

    trachea_path = np.array([[0.0, -2.0], [0.0, -0.2], [0.005, anatomy.carina[1]]])
    trachea = frame.polyline(np.zeros_like(tissue), trachea_path, 0.07, 1.0)
    for end in anatomy.hila:
        bronchus = np.array([anatomy.carina, anatomy.carina + 0.5 * (end - anatomy.carina)])
        frame.polyline(trachea, bronchus, 0.04, 0.5)
    tissue -= 0.45 * scene.blur(trachea, 0.008)

    bubble = scene.blob(anatomy.stomach, 0.10, 0.05)
    tissue -= 0.35 * bubble * (scene.y > anatomy.stomach[1] - 0.03) * body8
    # bowel gas: small irregular lucencies in the abdomen
    gas = np.zeros_like(tissue)
    circle = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    circle = np.stack([np.cos(circle), np.sin(circle)], 1)
    for _ in range(rng.integers(3, 9)):
        centre = (rng.uniform(-0.8, 0.8), anatomy.stomach[1] + rng.uniform(0.15, 0.9))
        outline = centre + circle * rng.uniform(0.03, 0.08, 2)
        frame.fill([outline + rng.normal(0, 0.008, outline.shape)], 1.0, gas)
    tissue -= 0.22 * scene.blur(gas, 0.015) * body8
    scene.tissue = tissue.astype(np.float32)


def _bones(scene: Scene) -> None:
    frame, anatomy = scene.frame, scene.anatomy
    bone = np.zeros_like(scene.tissue)

    # spine: vertebral bodies with darker disc spaces, pedicles as paired bright ovals
    hw = anatomy.spine_half_width
    rows, cols = scene.window(-hw, hw, -3.0, 3.0)
    x, y = scene.x[rows, cols], scene.y[rows, cols]
    in_spine = np.clip(1 - (x / hw) ** 2, 0, 1)
    level = (y + 0.05) / 0.088
    discs = 0.85 + 0.15 * np.clip(np.abs(np.sin(np.pi * level)) * 1.6, 0, 1)
    pedicle = np.exp(
        -(((np.abs(x) - 0.75 * hw) / (0.2 * hw)) ** 2) - ((np.mod(level, 1.0) - 0.5) / 0.22) ** 2
    )
    # the spine shows clearly in the neck, faintly through the mediastinum and abdomen
    visible = 0.45 - 0.15 * np.clip(y + 0.1, 0, 0.6) / 0.6
    bone[rows, cols] += (np.sqrt(in_spine) * discs + 0.4 * pedicle) * visible

    ribs = np.zeros_like(bone)
    for line in anatomy.posterior_ribs:
        frame.polyline(ribs, line, 0.085, 1.0)
    for line in anatomy.posterior_ribs:
        frame.polyline(ribs, line, 0.055, 0.7)
    anterior = np.zeros_like(bone)
    for line in anatomy.anterior_ribs:
        frame.polyline(anterior, line, 0.05, 1.0)
    # anterior ribs fade towards the (uncalcified) costal cartilage
    anterior *= np.clip(np.abs(scene.x) - 0.3, 0, 0.4) / 0.4
    # ribs show mostly against the lungs; over soft tissue they fade into the background
    bone += (0.15 * ribs + 0.06 * anterior) * (0.5 + 0.5 * scene.blur(scene.lungs, 0.03))

    clavicles = frame.fill([anatomy.right_clavicle, anatomy.left_clavicle])
    bone += 0.35 * scene.blur(clavicles, 0.006)
    scapulae = frame.fill(anatomy.scapulae)
    bone += 0.12 * scene.blur(scapulae, 0.01) + 0.08 * np.abs(scapulae - scene.blur(scapulae, 0.01))
    humeri = np.zeros_like(bone)
    for centre, radius in anatomy.humeri:
        rows, cols = scene.window(
            centre[0] - radius, centre[0] + radius, centre[1] - radius, centre[1] + radius
        )
        d2 = (
            (scene.x[rows, cols] - centre[0]) ** 2 + (scene.y[rows, cols] - centre[1]) ** 2
        ) / radius**2
        bone[rows, cols] += 0.6 * np.sqrt(np.clip(1 - d2, 0, 1))
        neck = np.array([centre, centre + [np.sign(centre[0]) * 0.12, 0.5]])
        frame.polyline(humeri, neck, 1.1 * radius, 1.0)
    bone += 0.4 * scene.blur(humeri, 0.02)
    scene.bone = scene.blur(bone * scene.body, 0.004)


def _markings(rng, scene: Scene) -> None:
    """Lung vessels: forking, tapering trees from each hilum, plus a fine interstitial texture."""
    frame, anatomy = scene.frame, scene.anatomy
    vessels = np.zeros_like(scene.tissue)
    trunks = np.linspace(-1.4, 1.5, 5)
    start = np.repeat(anatomy.hila, len(trunks), axis=0)
    side = np.repeat([-1.0, 1.0], len(trunks))
    angle = np.tile(trunks, 2) + rng.normal(0, 0.1, 2 * len(trunks))
    width, length = 0.03, 0.12
    for depth in range(5):
        for _ in range(3):  # each vessel runs a jittered course ...
            angle = angle + rng.normal(0, 0.15, angle.shape)
            step = length / 3 * rng.uniform(0.8, 1.2, angle.shape)
            end = start + step[:, None] * np.stack([side * np.cos(angle), 1.7 * np.sin(angle)], 1)
            frame.polylines(vessels, np.stack([start, end], 1), width, 0.8**depth)
            start = end
        if depth < 4:  # ... then forks into two thinner ones
            turn = rng.uniform(0.2, 0.5, (2, angle.size)) * np.array([[-1], [1]])
            angle = (angle[None, :] + turn).ravel()
            start, side = np.tile(start, (2, 1)), np.tile(side, 2)
            width, length = width * 0.7, length * 0.85
    vessels = scene.blur(vessels, 0.01)
    hilum_glow = sum(scene.blob(hilum, 0.07, 0.09) for hilum in anatomy.hila)
    texture = gaussian_noise_field(rng, vessels.shape, 0.012 * frame.unit)
    scene.markings = (0.22 * vessels + 0.25 * hilum_glow + 0.03 * texture).astype(np.float32)


@dataclass
class Exposure:
    """How attenuation turns into grey levels: display style of one dataset."""

    gain: tuple[float, float] = (0.85, 1.15)  # attenuation scale (exposure)
    black: tuple[float, float] = (0.0, 0.05)  # grey level of unattenuated air
    white: tuple[float, float] = (0.86, 0.96)  # grey level of the densest tissue
    gamma: tuple[float, float] = (1.8, 2.4)
    noise: tuple[float, float] = (0.008, 0.02)  # film grain, share of full scale
    blur_px: tuple[float, float] = (0.4, 0.9)
    sharpen: tuple[float, float] = (0.0, 0.8)  # unsharp masking of digital radiographs


def expose(rng: np.random.Generator, scene: Scene, exposure: Exposure) -> np.ndarray:
    """Combine the layers into a float32 display image in [0, 1] (bright = dense)."""
    lungs_soft = scene.blur(scene.lungs, 0.01)
    attenuation = (
        scene.tissue + scene.bone + scene.markings * lungs_soft + scene.opacity + scene.metal
    )
    attenuation = np.maximum(attenuation, 0) * rng.uniform(*exposure.gain)
    density = 1 - np.exp(-attenuation)
    density = density ** rng.uniform(*exposure.gamma)
    sharpen = rng.uniform(*exposure.sharpen)
    if sharpen > 0:
        density += sharpen * (density - scene.blur(density, 0.05))
    blur = rng.uniform(*exposure.blur_px)
    density = cv2.GaussianBlur(density.astype(np.float32), (0, 0), blur)
    density += rng.uniform(*exposure.noise) * rng.standard_normal(density.shape, dtype=np.float32)
    black, white = rng.uniform(*exposure.black), rng.uniform(*exposure.white)
    image = np.clip(black + (white - black) * density, 0, 1).astype(np.float32)
    if scene.frame.exposed_rows is not None:  # unexposed film below the field: black
        image[scene.frame.exposed_rows :] = rng.uniform(0.0, 0.02)
    return image
