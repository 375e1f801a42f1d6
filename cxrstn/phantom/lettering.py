"""Burned-in text outside the thorax: the shortcut that thorax cropping should remove.

Rule (the `phantom.text_label_correlation` parameter, c in [0, 1]): a CheXpert look-alike
image carries burned-in text with probability

    P(text | abnormal) = (1 + c) / 2        P(text | normal) = (1 - c) / 2

and 1/2 when its study is neither normal nor abnormal. So c = 0 makes text independent of
the label (half of all images have it), c = 1 puts text on every abnormal image and on no
normal one. With text, an image gets a side marker ("L" or "R") and, each with its own
chance, a position label ("PA ERECT", "PORTABLE", ...) and a date; without text it gets
none of them. Text is always drawn outside the bounding box of the lungs.
"""

from __future__ import annotations

import cv2
import numpy as np

PA_WORDS = ("PA ERECT", "PA", "ERECT", "STANDING", "UPRIGHT", "PA CHEST")
AP_WORDS = ("PORTABLE", "AP PORTABLE", "AP UPRIGHT", "AP PORT UPRIGHT", "SEMI-ERECT", "SUPINE")
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN)


def text_probability(label: int | None, correlation: float) -> float:
    """Chance that an image carries burned-in text: label 1 abnormal, 0 normal, None neither."""
    if not 0 <= correlation <= 1:
        raise ValueError(f"phantom.text_label_correlation must be in [0, 1], got {correlation}")
    if label is None:
        return 0.5
    return (1 + correlation) / 2 if label == 1 else (1 - correlation) / 2


def sample_words(rng: np.random.Generator, view: str) -> list[str]:
    """The text of one image: a side marker, maybe a position label, maybe a date."""
    words = [str(rng.choice(["L", "R"], p=[0.75, 0.25]))]
    if rng.random() < 0.7:
        words.append(str(rng.choice(AP_WORDS if view == "AP" else PA_WORDS)))
    if rng.random() < 0.4:
        day = f"{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}/{rng.integers(2002, 2018)}"
        words.append(
            day
            if rng.random() < 0.5
            else f"{day} {rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
        )
    return words


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _spot(rng, size, shape, corner: str, taken: list) -> tuple[int, int, int, int] | None:
    """A rectangle for a text block in `corner`, stacked away from the corner until it is
    clear of everything in `taken` (the lung box and earlier words); None if none fits."""
    (w, h), (height, width) = size, shape
    pad = max(2, round(0.015 * width))
    jitter_x, jitter_y = (int(v) for v in rng.integers(0, 2 * pad + 1, 2))
    x = width - pad - w - jitter_x if corner.endswith("right") else pad + jitter_x
    for step in range(12):
        offset = jitter_y + step * (h + pad)
        y = height - pad - h - offset if corner.startswith("bottom") else pad + offset
        rect = (x, y, x + w, y + h)
        inside = x >= 0 and y >= 0 and x + w <= width and y + h <= height
        if inside and not any(_overlaps(rect, other) for other in taken):
            return rect
    return None


def burn_text(
    rng: np.random.Generator, image: np.ndarray, box: tuple[int, int, int, int], words: list[str]
) -> int:
    """Draw `words` in white (1.0) on the float image, clear of `box`; return how many fit.

    The side marker goes to the matching side ("L" image right, "R" image left), the
    other words to the opposite top corner, a date to a bottom corner.
    """
    taken = [box]
    white = np.zeros(image.shape, np.uint8)  # coverage of white ink (text, label cards)
    black = np.zeros(image.shape, np.uint8)  # black letters on a white card
    font = FONTS[rng.integers(len(FONTS))]
    marker_side = "right" if words and words[0] == "L" else "left"
    other_side = "left" if marker_side == "right" else "right"
    for index, word in enumerate(words):
        marker = index == 0
        height_px = image.shape[0] * (
            rng.uniform(0.045, 0.07) if marker else rng.uniform(0.025, 0.04)
        )
        scale = cv2.getFontScaleFromHeight(font, max(int(height_px), 6))
        thickness = max(1, round(height_px / (7 if marker else 12)))
        (text_w, text_h), baseline = cv2.getTextSize(word, font, scale, thickness)
        if marker:
            corners = [f"top {marker_side}", f"bottom {marker_side}"]
        elif "/" in word:
            corners = [f"bottom {other_side}", f"bottom {marker_side}"]
        else:
            corners = [f"top {other_side}", f"top {marker_side}", f"bottom {other_side}"]
        for corner in corners:
            rect = _spot(rng, (text_w + 4, text_h + baseline + 4), image.shape, corner, taken)
            if rect is not None:
                break
        if rect is None:
            continue
        boxed = not marker and rng.random() < 0.3
        if boxed:  # black letters on a white label, as on the Montgomery films
            cv2.rectangle(white, rect[:2], (rect[2] - 1, rect[3] - 1), 255, -1)
        origin = (rect[0] + 2, rect[1] + 2 + text_h)
        ink = black if boxed else white
        cv2.putText(ink, word, origin, font, scale, 255, thickness, cv2.LINE_AA)
        taken.append(rect)
    image += (1.0 - image) * (white / np.float32(255))
    image *= 1.0 - black / np.float32(255)
    return len(taken) - 1
