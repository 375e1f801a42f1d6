"""The not_radiograph check (cxrstn/input_check.py): its three measurements by hand, every
synthetic kind of non-radiograph refused for its own reason, phantom films in every format
the sources use accepted, and the real samples: every mask refused, no film."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrstn.images import read_image
from cxrstn.input_check import (
    COLOUR_SHARE,
    FEW_LEVELS,
    NOISE_CORRELATION,
    adjacent_correlation,
    appearance,
    colour_share,
    grey_levels,
    verdict,
)
from cxrstn.nonradiographs import examples, film, write_examples


def problem_of(path: Path) -> str | None:
    return appearance(read_image(path), colour_share(path)).problem()


# --- the measurements by hand ------------------------------------------------------------


def test_grey_levels_counts_the_fewest_levels_holding_90_percent():
    image = np.zeros((10, 100), np.uint8)  # 1000 pixels
    image[:, :50] = 7  # 500 pixels
    image[:, 50:80] = 200  # 300
    image[:, 80:88] = 3  # 80
    image[:, 88:100] = np.arange(12)[None, :] + 100  # 12 levels of 10 pixels each
    # 500 + 300 + 80 = 880 < 900: a fourth level (10 pixels) is needed, then 890, then 900
    assert grey_levels(image) == 5
    assert grey_levels(image, share=0.8) == 2
    assert grey_levels(np.full((40, 40), 9, np.uint8)) == 1


def test_adjacent_correlation_by_hand():
    stripes = np.tile(np.array([0, 255], np.uint8), (40, 20))  # 0, 255, 0, ... along rows
    assert adjacent_correlation(stripes) == pytest.approx(-1.0)
    ramp = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (50, 1))  # right = left + 2
    assert adjacent_correlation(ramp) == pytest.approx(1.0)
    assert adjacent_correlation(np.full((50, 50), 3, np.uint8)) == 1.0  # no variation
    # a large image is measured shrunk to WORK_SIDE (1024 -> 256: blocks of 4 x 4 pixels),
    # where 1-pixel stripes average to flat grey
    assert adjacent_correlation(np.tile(np.array([0, 255], np.uint8), (1024, 512))) == 1.0


def test_colour_share_counts_pixels_whose_channels_differ(tmp_path):
    rgb = np.full((40, 50, 3), 120, np.uint8)
    rgb[:10, :, 0] = 200  # a quarter of the pixels: red 80 above green and blue
    rgb[10:20, :, 1] = 140  # green 20 above: within COLOUR_SPREAD, still grey
    Image.fromarray(rgb).save(tmp_path / "quarter.png")
    assert colour_share(tmp_path / "quarter.png") == pytest.approx(0.25)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    assert colour_share(tmp_path / "grey.png") == 0.0
    grey_rgb = np.repeat(film(1, 200, 240)[..., None], 3, axis=2)  # RGB with equal channels
    Image.fromarray(grey_rgb).save(tmp_path / "grey_rgb.jpg", quality=80)
    assert colour_share(tmp_path / "grey_rgb.jpg") < COLOUR_SHARE / 10  # JPEG chroma noise


def test_verdict_puts_not_radiograph_before_out_of_distribution():
    assert verdict("flat (a single grey level)", 3.0) == (
        "not_radiograph",
        "flat (a single grey level)",
    )
    assert verdict(None, 1.2345) == ("out_of_distribution", "feature distance 1.23x the threshold")
    assert verdict(None, 1.0) == ("ok", "")  # at the threshold: the held-out quantile itself


# --- synthetic non-radiographs and phantom films -----------------------------------------

REASONS = {
    "mask_lungs.png": "2 grey levels",
    "mask_lungs_soft.jpg": "2 grey levels",
    "checkerboard.png": "2 grey levels",
    "flat_grey.png": "flat",
    "flat_noisy.png": "grey levels",
    "noise_uniform.png": "noise",
    "noise_gaussian.jpg": "noise",
    "text_page.png": "grey levels",
    "screenshot.png": "grey levels",
    "colour_photo.jpg": "colour",
    "colour_heatmap.png": "colour",
}


def test_every_kind_of_synthetic_non_radiograph_is_refused_for_its_reason(tmp_path):
    files = write_examples(tmp_path)
    assert sorted(f.name for f in files) == sorted(REASONS)
    for file in files:
        problem = problem_of(file)
        assert problem is not None and REASONS[file.name] in problem, (file.name, problem)


def test_each_kind_is_far_from_its_threshold(tmp_path):
    """Fitted constants with room on both sides: the refused kinds measure far beyond them."""
    for file in write_examples(tmp_path):
        looks = appearance(read_image(file), colour_share(file))
        if file.name.startswith("colour"):
            assert looks.colour > 20 * COLOUR_SHARE
        elif file.name.startswith("noise"):
            assert looks.correlation < NOISE_CORRELATION / 5
        else:
            assert looks.levels <= FEW_LEVELS / 5


def test_phantom_films_in_every_source_format_pass(tmp_path):
    for seed in range(4):
        image = film(seed)
        Image.fromarray(image).save(tmp_path / f"{seed}.jpg", quality=90)  # CheXpert
        Image.fromarray(image).save(tmp_path / f"{seed}.png")  # Montgomery, Shenzhen
        Image.fromarray(np.repeat(image[..., None], 3, axis=2)).save(tmp_path / f"{seed}rgb.png")
        Image.fromarray(image).convert("P").save(tmp_path / f"{seed}palette.png")
        Image.fromarray(image.astype(np.uint16) * 16).save(tmp_path / f"{seed}_16.png")
        square = film(seed, 400, 400).astype(np.int32)
        raw = (4095 - square * 16).astype(">u2")  # JSRT: 12-bit big-endian, high is dark
        (tmp_path / f"{seed}.IMG").write_bytes(raw.tobytes())
    for file in sorted(tmp_path.iterdir()):
        looks = appearance(read_image(file), colour_share(file))
        assert looks.problem() is None, (file.name, looks)
        assert looks.levels >= 3 * FEW_LEVELS and looks.correlation > 0.95


def test_the_examples_are_what_their_names_say():
    pixels = examples(0)
    assert set(np.unique(pixels["mask_lungs.png"])) == {0, 255}
    assert pixels["colour_heatmap.png"].shape[2] == 3 and pixels["colour_photo.jpg"].ndim == 3
    assert np.ptp(pixels["flat_grey.png"]) == 0


# --- the real samples --------------------------------------------------------------------


def test_real_masks_are_refused_and_real_films_are_not(real_samples):
    images = [p for p in real_samples.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    masks = [p for p in images if "mask" in str(p.relative_to(real_samples)).lower()]
    films = [p for p in images if p not in masks]
    assert len(masks) >= 10 and len(films) >= 15  # the README's 14 masks and 20 films
    for mask in masks:
        assert "2 grey levels" in (problem_of(mask) or ""), mask
    for radiograph in films:
        assert problem_of(radiograph) is None, radiograph
