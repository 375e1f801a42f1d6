"""The phantom: original on-disk formats, exact masks, findings and text where they belong,
label frequencies of the paper's Table I, determinism for any worker count."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import load_bench
from PIL import Image

from cxrstn.images import read_image
from cxrstn.phantom import findings as F
from cxrstn.phantom import generate, render_frontal
from cxrstn.phantom.datasets import (
    AP_LAYOUT,
    PA_LAYOUT,
    TB_COMPANIONS,
    plan_chexpert,
    tb_findings,
)
from cxrstn.phantom.labels import (
    NEITHER_SHARE,
    TABLE_I,
    TABLE_I_ABNORMAL,
    TABLE_I_NORMAL,
    UNCERTAIN_SHARE,
    binary_label,
    sample_study,
)
from cxrstn.phantom.lettering import text_probability
from cxrstn.sources import chexpert, montgomery, shenzhen
from cxrstn.sources.lung_sets import lung_samples

TINY = {
    "seed": 3,
    "chexpert_patients": 6,
    "chexpert_size": [96, 117],
    "jsrt_images": 3,
    "jsrt_side": 96,
    "montgomery_images": 3,
    "montgomery_size": [100, 122],
    "shenzhen_images": 3,
    "shenzhen_size": [96, 94],
    "shenzhen_mask_share": 0.67,
    "text_label_correlation": 0.5,
    "finding_contrast": 1.0,
    "workers": 1,
}
PATH = re.compile(
    r"CheXpert-v1\.0-small/train/patient\d{5}/study(\d+)/view(\d+)_(frontal|lateral)\.jpg"
)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    generate(TINY, root)
    return root


def test_file_layout_and_names(tiny):
    names = lambda pattern: sorted(p.name for p in tiny.glob(pattern))  # noqa: E731
    assert names("JSRT/All247images/*") == ["JPCLN001.IMG", "JPCLN002.IMG", "JPCNN001.IMG"]
    for fold, keys in (("fold1", ["JPCLN001", "JPCNN001"]), ("fold2", ["JPCLN002"])):
        for part in ("left lung", "right lung", "heart", "left clavicle", "right clavicle"):
            assert names(f"SCR/scratch/{fold}/masks/{part}/*") == [f"{k}.gif" for k in keys]
    montgomery_images = names("MontgomerySet/CXR_png/*")
    assert len(montgomery_images) == 3
    assert all(re.fullmatch(r"MCUCXR_\d{4}_[01]\.png", n) for n in montgomery_images)
    for folder in ("ManualMask/leftMask", "ManualMask/rightMask"):
        assert names(f"MontgomerySet/{folder}/*") == montgomery_images
    assert names("MontgomerySet/ClinicalReadings/*") == [n[:-4] + ".txt" for n in montgomery_images]
    assert names("ChinaSet_AllFiles/CXR_png/*") == [
        "CHNCXR_0001_0.png",
        "CHNCXR_0002_1.png",
        "CHNCXR_0003_1.png",
    ]
    assert len(names("shenzhen_masks/mask/*_mask.png")) == 2  # round(0.67 * 3)
    assert (tiny / "CheXpert-v1.0-small/train.csv").is_file()


def test_readers_read_the_phantom(tiny):
    samples = lung_samples(
        jsrt=tiny / "JSRT/All247images",
        scr=tiny / "SCR/scratch",
        montgomery=tiny / "MontgomerySet",
        shenzhen=tiny / "ChinaSet_AllFiles",
        shenzhen_masks=tiny / "shenzhen_masks",
    )
    assert [s.source for s in samples].count("jsrt") == 3 and len(samples) == 9
    assert sum(1 for s in samples if s.mask_paths) == 8  # one Shenzhen image has no mask
    for sample in samples:
        image, mask = sample.read_image(), sample.read_lung_mask()
        if mask is not None:
            assert mask.shape == image.shape
            # the lungs are dark: darker than the rest of their bounding box (mediastinum...)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            assert image[box][mask[box]].mean() < image[box][~mask[box]].mean() - 30
    readings = sorted(tiny.glob("MontgomerySet/ClinicalReadings/*.txt"))
    text = readings[0].read_bytes().decode()
    assert re.fullmatch(r"Patient's Sex: [FM] \nPatient's Age: \d{3}Y\n[^\n]+\n", text)
    assert montgomery.read_clinical(readings[0])["sex"] in ("F", "M")
    reading = tiny / "ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0002_1.txt"
    raw = reading.read_bytes()
    assert re.fullmatch(rb"(male|female) \d+yrs\r\n[^\r\n]+", raw) and not raw.endswith(b"\n")
    assert shenzhen.read_clinical(reading)["finding"] != "normal"


def test_chexpert_csv_columns_and_value_coding(tiny):
    csv_path = tiny / "CheXpert-v1.0-small/train.csv"
    lines = csv_path.read_bytes().decode().split("\n")
    assert lines[0] == ",".join(chexpert.COLUMNS) and lines[-1] == "" and "\r" not in lines[0]
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for column in chexpert.LABEL_COLUMNS:
        allowed = {"1.0", ""} if column == "No Finding" else {"1.0", "0.0", "-1.0", ""}
        assert set(raw[column]) <= allowed, column
    assert set(raw["Sex"]) <= {"Male", "Female"} and raw["Age"].str.fullmatch(r"\d+").all()
    for row in raw.itertuples(index=False):
        match = PATH.fullmatch(row.Path)
        assert match, row.Path
        assert row[3] == match.group(3).title()  # Frontal/Lateral agrees with the file name
        assert (row[4] == "") == (row[3] == "Lateral") and row[4] in ("AP", "PA", "LL", "RL", "")
        with Image.open(tiny / row.Path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (96, 117))
    table = chexpert.read_csv(csv_path)  # the project's reader accepts it as real data
    assert len(table) == len(raw) and table["Path"].map(chexpert.patient_of).nunique() == 6


def test_jsrt_raw_twelve_bit_big_endian_inverted(tiny):
    path = tiny / "JSRT/All247images/JPCLN001.IMG"
    assert path.stat().st_size == 2 * 96 * 96  # no header
    big = np.fromfile(path, dtype=">u2").reshape(96, 96)
    little = np.fromfile(path, dtype="<u2")
    assert big.max() <= 4095 and big.max() > 3000 and little.max() > 4095
    lungs = np.zeros((48, 48), bool)
    for part in ("left lung", "right lung"):
        gif = Image.open(tiny / f"SCR/scratch/fold1/masks/{part}/JPCLN001.gif")
        assert gif.size == (48, 48)  # half the image side
        mask = np.asarray(gif.convert("L"))
        assert set(np.unique(mask)) == {0, 255}
        lungs |= mask == 255
    lungs = lungs.repeat(2, axis=0).repeat(2, axis=1)
    # high raw values are dark: the air-filled lungs hold the highest values
    assert big[lungs].mean() > big[~lungs].mean() + 500
    left = np.asarray(
        Image.open(tiny / "SCR/scratch/fold1/masks/left lung/JPCLN001.gif").convert("L")
    )
    assert np.nonzero(left)[1].mean() > 24  # the patient's left lung is on the image right


def test_masks_are_binary_at_image_size(tiny):
    for image_path in sorted(tiny.glob("MontgomerySet/CXR_png/*.png")):
        size = Image.open(image_path).size
        for side in ("leftMask", "rightMask"):
            mask = Image.open(tiny / "MontgomerySet/ManualMask" / side / image_path.name)
            assert mask.size == size and set(np.unique(np.asarray(mask))) == {0, 255}
    for mask_path in sorted(tiny.glob("shenzhen_masks/mask/*_mask.png")):
        image = tiny / "ChinaSet_AllFiles/CXR_png" / mask_path.name.replace("_mask", "")
        mask = Image.open(mask_path)
        assert mask.size == Image.open(image).size == (96, 94)
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}


def test_rendered_lung_masks_cover_the_dark_lung_pixels():
    for seed in range(4):
        film = render_frontal(np.random.default_rng(seed), 200, 240)
        x0, y0, x1, y1 = film.lung_box
        box = film.image[y0:y1, x0:x1]
        darkest = box < np.quantile(box, 0.25)
        # nearly all of the darkest quarter of the thorax lies inside the drawn lungs
        assert film.lungs[y0:y1, x0:x1][darkest].mean() > 0.9
        assert film.left_lung[:, 100:].sum() > 0.95 * film.left_lung.sum()  # image right
        assert not (film.left_lung & film.right_lung).any()
        assert not (film.lungs & film.heart).any()  # SCR-style: the heart is cut out


def test_the_margin_below_the_lungs_is_the_widest():
    margins = []
    for seed in range(12):
        x0, y0, x1, y1 = render_frontal(np.random.default_rng(seed), 160, 195).lung_box
        margins.append((x0, 160 - x1, y0, 195 - y1))
    left, right, top, bottom = np.mean(margins, axis=0)
    # real masks (Shenzhen, Montgomery): sides about 0.15 of the width, top about 0.12 of
    # the height, the abdomen below the widest
    assert max(left, right, top) < bottom


def test_poses_vary_like_real_films():
    # Real lung masks (Shenzhen, Montgomery): box centre height std 0.06 and box height std
    # 0.10 of the image height, box width mean 0.70 of the image width. The phantom's
    # CheXpert frontals (PA and AP layouts) spread at least as much.
    for layout in (PA_LAYOUT, AP_LAYOUT):
        boxes = np.array(
            [
                render_frontal(np.random.default_rng([11, i]), 80, 98, layout=layout).lung_box
                for i in range(60)
            ],
            dtype=float,
        )
        centre = (boxes[:, 1] + boxes[:, 3]) / 2 / 98
        height = (boxes[:, 3] - boxes[:, 1]) / 98
        width = (boxes[:, 2] - boxes[:, 0]) / 80
        assert 0.055 < centre.std() < 0.09
        assert 0.09 < height.std() < 0.14
        assert 0.65 < width.mean() < 0.76
        assert boxes[:, 1].min() >= 0 and boxes[:, 3].max() <= 98


def test_truth_holds_each_file_size(tiny):
    truth = pd.read_csv(tiny / "truth.csv")
    for row in truth.sample(6, random_state=0).itertuples():
        height, width = read_image(tiny / row.file).shape
        assert (row.width, row.height) == (width, height)
        assert 0 <= row.x0 < row.x1 <= width and 0 <= row.y0 < row.y1 <= height


@pytest.mark.parametrize("name", sorted(F.PAINTERS))
def test_findings_are_drawn_inside_the_lungs(name):
    """Adding a finding changes only the finding layer (own random stream) of the same chest."""
    plain = render_frontal(np.random.default_rng(7), 200, 240)
    sick = render_frontal(np.random.default_rng(7), 200, 240, findings={name: 1.0})
    change = np.abs(sick.image - plain.image)
    if name == "Atelectasis":  # volume loss: a raised hemidiaphragm
        assert sick.lungs.sum() < 0.97 * plain.lungs.sum()
    else:
        assert np.array_equal(sick.lungs, plain.lungs)
    near_lungs = np.zeros_like(plain.lungs)
    x0, y0, x1, y1 = plain.lung_box
    near_lungs[max(y0 - 6, 0) : y1 + 6, max(x0 - 6, 0) : x1 + 6] = True
    assert change[plain.lungs].max() > 0.05, "the finding is not visible"
    if name != "Atelectasis":  # a raised dome also moves the stomach bubble below it
        assert change[~near_lungs].max() < 0.02, "the finding leaks outside the thorax"


def test_shape_findings_enlarge_the_heart_and_break_a_rib():
    plain = render_frontal(np.random.default_rng(2), 200, 240)
    big = render_frontal(np.random.default_rng(2), 200, 240, findings={"Cardiomegaly": 1.0})
    assert big.heart.sum() > 1.3 * plain.heart.sum()
    broken = render_frontal(np.random.default_rng(2), 200, 240, findings={"Fracture": 1.0})
    assert np.abs(broken.image - plain.image).max() > 0.02
    assert np.array_equal(broken.lungs, plain.lungs)


def test_text_probability_rule():
    assert text_probability(1, 0.0) == text_probability(0, 0.0) == 0.5
    assert (text_probability(1, 0.5), text_probability(0, 0.5)) == (0.75, 0.25)
    assert (text_probability(1, 1.0), text_probability(0, 1.0)) == (1.0, 0.0)
    assert text_probability(None, 1.0) == 0.5
    with pytest.raises(ValueError, match="text_label_correlation"):
        text_probability(1, 1.5)


def test_text_follows_the_label_in_the_plan():
    _, tasks = plan_chexpert(0, 300, (96, 117), 1.0, correlation=1.0)
    labelled = [t.spec for t in tasks if t.spec["label"] is not None]
    assert all(spec["text"] == (spec["label"] == 1) for spec in labelled)
    _, tasks = plan_chexpert(0, 800, (96, 117), 1.0, correlation=0.5)
    specs = pd.DataFrame([t.spec for t in tasks]).dropna(subset=["label"])
    share = specs.groupby("label")["text"].mean()
    assert abs(share[1] - 0.75) < 0.04 and abs(share[0] - 0.25) < 0.06


def test_text_is_burned_in_outside_the_lungs():
    plain = render_frontal(np.random.default_rng(4), 200, 240)
    text = render_frontal(np.random.default_rng(4), 200, 240, words=["L", "PA ERECT", "01/02/2003"])
    assert text.words == 3 and plain.words == 0
    change = np.abs(text.image - plain.image) > 1e-6
    x0, y0, x1, y1 = text.lung_box
    assert change.sum() > 100 and not change[y0:y1, x0:x1].any()
    assert text.image[change].max() == pytest.approx(1.0)  # white lettering


def test_label_frequencies_match_table_i():
    rng = np.random.default_rng(0)
    studies = pd.DataFrame([sample_study(rng) for _ in range(20000)])
    label = studies.apply(binary_label, axis=1)
    assert abs(label.isna().mean() - NEITHER_SHARE) < 0.01
    kept = studies[label.notna()]
    total = TABLE_I_NORMAL + TABLE_I_ABNORMAL  # 27,654
    assert abs((label[label.notna()] == 0).mean() - TABLE_I_NORMAL / total) < 0.01
    for name, count in TABLE_I.items():
        mentioned = kept[name].isin([1.0, -1.0])
        assert abs(mentioned.mean() - count / total) < 0.012, name
        uncertain = (kept[name] == -1.0).sum() / mentioned.sum()
        assert abs(uncertain - UNCERTAIN_SHARE[name]) < 0.06, name
    normal = kept[label[label.notna()] == 0]
    assert normal[list(TABLE_I)].isin([1.0, -1.0]).sum().sum() == 0


def test_same_seed_same_bytes_for_any_worker_count(tiny, tmp_path):
    generate(TINY | {"workers": 2}, tmp_path / "two")
    assert _digest(tmp_path / "two") == _digest(tiny)
    generate(TINY | {"seed": 4}, tmp_path / "other")
    assert _digest(tmp_path / "other") != _digest(tiny)


def test_bad_params_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="jsrt_side"):
        generate(TINY | {"jsrt_side": 95}, tmp_path / "a")
    with pytest.raises(ValueError, match="shenzhen_mask_share"):
        generate(TINY | {"shenzhen_mask_share": 1.2}, tmp_path / "b")
    with pytest.raises(ValueError, match="chexpert_size"):
        generate(TINY | {"chexpert_size": [320]}, tmp_path / "c")
    with pytest.raises(ValueError, match="text_label_correlation"):
        generate(TINY | {"text_label_correlation": -0.1}, tmp_path / "d")


def test_shenzhen_png_modes_read_as_grey(tmp_path):
    generate(
        TINY
        | {"chexpert_patients": 1, "jsrt_images": 0, "montgomery_images": 0, "shenzhen_images": 12},
        tmp_path,
    )
    modes = set()
    for path in sorted(tmp_path.glob("ChinaSet_AllFiles/CXR_png/*.png")):
        with Image.open(path) as image:
            modes.add(image.mode)
        assert read_image(path).ndim == 2
    assert modes >= {"L", "P"}


def test_tb_films_draw_the_companions_their_reading_names():
    rng = np.random.default_rng(0)
    assert tb_findings(rng, 0, 1.5) == ({}, [])
    draws = [tb_findings(rng, 1, 1.5) for _ in range(2000)]
    for findings, words in draws:
        assert findings[F.TUBERCULOSIS] == 1.5 and set(findings.values()) == {1.5}
        named = [TB_COMPANIONS[name][1] for name in findings if name != F.TUBERCULOSIS]
        assert words == named
    for name, (probability, _) in TB_COMPANIONS.items():
        share = np.mean([name in findings for findings, _ in draws])
        assert share == pytest.approx(probability, abs=0.04), name


def test_tb_readings_agree_with_the_drawn_findings(tiny):
    truth = pd.read_csv(tiny / "truth.csv", keep_default_na=False)
    folders = {"montgomery": "MontgomerySet", "shenzhen": "ChinaSet_AllFiles"}
    checked = 0
    for row in truth[truth["dataset"].isin(folders)].itertuples():
        name = Path(row.file).stem
        text = (tiny / folders[row.dataset] / "ClinicalReadings" / f"{name}.txt").read_text()
        drawn = set(filter(None, row.findings.split(";")))
        assert (F.TUBERCULOSIS in drawn) == (row.label == "1")
        for companion, (_, words) in TB_COMPANIONS.items():
            assert (companion in drawn) == (words in text), (row.file, companion)
        checked += 1
    assert checked == 6


# Big enough that numpy's AVX-512 and AVX2 kernels round some pixels apart (7 of 63 files).
SIMD_SIZES = {
    "chexpert_patients": 8,
    "chexpert_size": [320, 390],
    "jsrt_side": 256,
    "montgomery_size": [300, 366],
    "shenzhen_size": [300, 294],
}
# An AVX2 machine, emulated as bench/simd.py does: every library that dispatches on the CPU
# held to AVX2.
_simd = load_bench("simd")
AVX2_MACHINE = _simd.AVX2_MACHINE
GENERATE = """
import json, sys
from cxrstn.runtime import configure_tools
configure_tools()  # as every stage starts
import numpy._core._multiarray_umath as umath
from cxrstn.phantom import generate
generate(json.loads(sys.argv[1]), sys.argv[2])
print(json.dumps(umath.__cpu_features__["X86_V4"]))
"""


def _generate_under(env_changes: dict, root: Path) -> bool:
    """Write the phantom in a fresh process with `env_changes`; whether AVX-512 was used."""
    env = {k: v for k, v in os.environ.items() if k not in _simd.CLEARED} | env_changes
    params = json.dumps(TINY | SIMD_SIZES)
    done = subprocess.run(
        [sys.executable, "-c", GENERATE, params, str(root)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_phantom_writes_the_same_bytes_on_avx2_and_avx512_cpus(tmp_path):
    """A stage holds numpy to its AVX2 kernels (configure_tools), so the phantom matches an
    AVX2 machine's byte for byte; with the pin lifted, an AVX-512 CPU writes other bytes."""
    native_avx512 = _generate_under({}, tmp_path / "native")
    _generate_under(AVX2_MACHINE, tmp_path / "avx2")
    assert not native_avx512, "configure_tools left numpy's AVX-512 kernels on"
    assert _digest(tmp_path / "native") == _digest(tmp_path / "avx2")
    if _generate_under({"NPY_DISABLE_CPU_FEATURES": ""}, tmp_path / "unpinned"):
        # this CPU has AVX-512: without the pin the bytes differ, which the pin prevents
        assert _digest(tmp_path / "unpinned") != _digest(tmp_path / "native")
