"""Dataset readers: CheXpert, JSRT + SCR, Montgomery and Shenzhen, on real and synthetic files."""

import time

import cv2
import numpy as np
import pytest
from PIL import Image

from cxrstn.sources import LungSample, chexpert, jsrt, montgomery, shenzhen
from cxrstn.sources.lung_sets import lung_samples

GZ_TRAIN = "chexpert/torchxrayvision_full_train/chexpert_train.csv.gz"
HEADER = ",".join(chexpert.COLUMNS)
ROW = (
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,"
    "Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0"
)


def _lungs(mask: np.ndarray) -> list[int]:
    """Areas of the 4-connected components of a bool mask, smallest first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    return sorted(stats[1:count, cv2.CC_STAT_AREA].tolist())


def _png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _mask(height, width, rows, cols) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[rows, cols] = 255
    return mask


# --- CheXpert -------------------------------------------------------------------------


def test_column_lists():
    assert len(chexpert.COLUMNS) == 19 and len(chexpert.LABEL_COLUMNS) == 14
    assert (
        chexpert.LABEL_COLUMNS[0] == "No Finding"
        and chexpert.LABEL_COLUMNS[-1] == "Support Devices"
    )
    assert len(chexpert.FINDINGS) == 12
    assert (
        chexpert.FINDINGS[0] == "Enlarged Cardiomediastinum" and chexpert.FINDINGS[-1] == "Fracture"
    )


def test_real_valid_csv(real_samples):
    table = chexpert.read_csv(real_samples / "chexpert/CheXpert-v1.0-small/valid.csv")
    assert len(table) == 234 and list(table.columns) == chexpert.COLUMNS
    labels = table[chexpert.LABEL_COLUMNS]
    assert set(np.unique(labels.to_numpy())) == {0.0, 1.0}  # no blanks, no -1 in valid.csv
    assert (table["No Finding"] == 1.0).sum() == 38
    assert (table["Frontal/Lateral"] == "Frontal").sum() == 202
    assert table["Path"].map(chexpert.patient_of).nunique() == 200


def test_real_small_train_csv_and_its_blank_views(real_samples):
    table = chexpert.read_csv(real_samples / "chexpert/CheXpert-v1.0-small/train.csv")
    assert len(table) == 1000
    assert table.loc[0, "Path"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert table.loc[0, "Age"] == 68 and table.loc[0, "No Finding"] == 1.0
    assert np.isnan(table.loc[0, "Cardiomegaly"])
    lateral = table["Frontal/Lateral"] == "Lateral"
    assert table.loc[lateral, "AP/PA"].isna().all()  # blank projection -> NaN


def test_real_full_train_csv_label_counts(real_samples):
    start = time.perf_counter()
    table = chexpert.read_csv(real_samples / GZ_TRAIN)
    assert time.perf_counter() - start < 10  # about 1 s on 2 cores; no per-row Python
    assert len(table) == 223_414
    values = table[chexpert.LABEL_COLUMNS].to_numpy()
    counts = [(values == v).sum() for v in (1.0, 0.0, -1.0)] + [np.isnan(values).sum()]
    assert counts == [515_589, 194_275, 139_958, 2_277_974]


def test_find_csv_searches_below_a_root_set_too_high(real_samples, tmp_path):
    small = real_samples / "chexpert/CheXpert-v1.0-small"
    assert chexpert.find_csv(small) == small / "train.csv"
    assert chexpert.find_csv(real_samples / "chexpert", "valid.csv") == small / "valid.csv"
    for folder in ("CheXpert-v1.0", "CheXpert-v1.0-small"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.csv").write_text(HEADER + "\n")
    with pytest.raises(ValueError, match="several train.csv"):
        chexpert.find_csv(tmp_path)
    with pytest.raises(FileNotFoundError, match="no valid.csv"):
        chexpert.find_csv(tmp_path, "valid.csv")


def test_image_file_resolves_against_the_csv_folders_parent(real_samples):
    csv_path = real_samples / "chexpert/CheXpert-v1.0-small/valid.csv"
    path = chexpert.read_csv(csv_path).loc[0, "Path"]
    assert path == "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"
    assert chexpert.image_file(csv_path, path).is_file()


def test_patient_and_study_of_a_path():
    path = "CheXpert-v1.0-small/train/patient00001/study12/view1_frontal.jpg"
    assert chexpert.patient_of(path) == "patient00001"
    assert chexpert.study_of(path) == "patient00001/study12"
    with pytest.raises(ValueError, match="no patientNNNNN"):
        chexpert.patient_of("train/p1/study1/view1_frontal.jpg")
    with pytest.raises(ValueError, match="studyN"):
        chexpert.study_of("train/patient00001/view1_frontal.jpg")


def test_numeric_spellings_of_labels_are_accepted(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(HEADER + "\n" + ROW.replace(",0.0,", ",0,").replace(",1.0,", ",1,") + "\n")
    table = chexpert.read_csv(csv_path)
    assert table.loc[0, "No Finding"] == 1.0 and table.loc[0, "Pneumothorax"] == 0.0


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [HEADER.replace(",Edema", ""), ROW],
            r"missing columns \['Edema'\], unexpected columns \[\]",
        ),
        ([HEADER + ",Extra", ROW + ",x"], r"missing columns \[\], unexpected columns \['Extra'\]"),
        (
            [HEADER, ROW, ROW.replace("Female,68,Frontal,AP,1.0", "Female,68,Frontal,AP,2.0")],
            r"line 3, column 'No Finding': invalid label '2.0'",
        ),
        (
            [HEADER, ROW.replace(",0.0,", ",positive,")],
            r"line 2, column 'Pneumothorax': invalid label 'positive'",
        ),
        (
            [HEADER, ROW, ROW.replace("patient00001", "patient00002"), ROW],
            r"1 Path\(s\) listed more than once: CheXpert-v1.0-small/train/patient00001/",
        ),
        ([HEADER, ROW, ROW.rsplit(",", 3)[0]], r"line 3: 16 fields, expected 19"),
        ([HEADER, ROW.replace(",AP,", ",XX,")], r"line 2, column 'AP/PA': unknown view 'XX'"),
        (
            [HEADER, ROW.replace(",68,", ",old,")],
            r"line 2, column 'Age': age is not a number 'old'",
        ),
    ],
    ids=[
        "missing-column",
        "extra-column",
        "unknown-label",
        "text-label",
        "duplicate",
        "short-row",
        "unknown-view",
        "text-age",
    ],
)
def test_bad_csv_raises_naming_file_and_problem(tmp_path, lines, message):
    csv_path = tmp_path / "bad_train.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad_train\.csv.*" + message):
        chexpert.read_csv(csv_path)


# --- JSRT + SCR -----------------------------------------------------------------------


def _jsrt_tree(tmp_path, side=64):
    """JPCLN001 with both SCR lung masks (half size, GIF), JPCNN001 without masks."""
    images = tmp_path / "JSRT/All247images"
    images.mkdir(parents=True)
    for key in ("JPCNN001", "JPCLN001"):
        np.full((side, side), 2000, dtype=">u2").tofile(images / f"{key}.IMG")
    half = side // 2
    masks = tmp_path / "SCR/scratch/fold1/masks"
    for folder, cols in (("left lung", slice(20, 28)), ("right lung", slice(4, 12))):
        (masks / folder).mkdir(parents=True)
        Image.fromarray(_mask(half, half, slice(8, 24), cols)).save(masks / folder / "JPCLN001.gif")
    (masks / "heart").mkdir()
    Image.fromarray(_mask(half, half, slice(10, 20), slice(10, 20))).save(
        masks / "heart/JPCLN001.gif"
    )
    return tmp_path / "JSRT/All247images", tmp_path / "SCR/scratch"


def test_jsrt_samples_and_upsampled_scr_masks(tmp_path):
    images, scr = _jsrt_tree(tmp_path)
    found = jsrt.samples(tmp_path / "JSRT", tmp_path / "SCR")  # roots one level too high
    assert [(s.key, len(s.mask_paths)) for s in found] == [("JPCLN001", 2), ("JPCNN001", 0)]
    assert [p.parent.name for p in found[0].mask_paths] == ["left lung", "right lung"]
    assert found == jsrt.samples(images, scr)
    mask = found[0].read_lung_mask()
    expected = np.zeros((64, 64), dtype=bool)
    expected[16:48, 40:56] = expected[16:48, 8:24] = True  # GIF rows 8:24 and cols x2
    assert mask.dtype == bool and np.array_equal(mask, expected)
    assert found[1].read_lung_mask() is None
    assert found[0].read_image()[0, 0] == 130  # round((4095 - 2000) * 255 / 4095) = round(130.46)


def test_jsrt_with_one_lung_mask_is_an_error(tmp_path):
    images, scr = _jsrt_tree(tmp_path)
    (scr / "fold1/masks/right lung/JPCLN001.gif").unlink()
    with pytest.raises(
        ValueError, match=r"JPCLN001\.IMG: SCR has a mask of one lung but not the right lung"
    ):
        jsrt.samples(images, scr)


# --- Montgomery -----------------------------------------------------------------------


def _montgomery_tree(tmp_path, left=None, right=None):
    root = tmp_path / "MontgomerySet"
    _png(root / "CXR_png/MCUCXR_0001_0.png", np.full((48, 40), 90, np.uint8))
    _png(root / "CXR_png/MCUCXR_0104_1.png", np.full((48, 40), 90, np.uint8))
    _png(
        root / "ManualMask/leftMask/MCUCXR_0001_0.png",
        left if left is not None else _mask(48, 40, slice(10, 30), slice(24, 34)),
    )
    _png(
        root / "ManualMask/rightMask/MCUCXR_0001_0.png",
        right if right is not None else _mask(48, 40, slice(12, 32), slice(4, 14)),
    )
    return root


def test_montgomery_samples_and_mask_union(tmp_path):
    root = _montgomery_tree(tmp_path)
    found = montgomery.samples(tmp_path)  # root one level too high
    assert [(s.source, s.key, len(s.mask_paths)) for s in found] == [
        ("montgomery", "MCUCXR_0001_0", 2),
        ("montgomery", "MCUCXR_0104_1", 0),
    ]
    assert found[0].image_path == root / "CXR_png/MCUCXR_0001_0.png"
    mask = found[0].read_lung_mask()
    assert mask.shape == (48, 40) and mask.sum() == 20 * 10 + 20 * 10
    assert _lungs(mask) == [200, 200]
    assert [montgomery.label_of(s.key) for s in found] == [0, 1]


def test_montgomery_kaggle_merged_masks(tmp_path):
    _png(tmp_path / "Lung Segmentation/CXR_png/MCUCXR_0001_0.png", np.zeros((40, 40), np.uint8))
    _png(
        tmp_path / "Lung Segmentation/masks/MCUCXR_0001_0.png",
        _mask(40, 40, slice(5, 9), slice(5, 9)),
    )
    (sample,) = montgomery.samples(tmp_path / "Lung Segmentation")
    assert [p.parent.name for p in sample.mask_paths] == ["masks"]
    assert sample.read_lung_mask().sum() == 16
    merged = tmp_path / "Lung Segmentation/masks/MCUCXR_0001_0.png"
    merged.rename(merged.with_name("MCUCXR_0001_0_mask.png"))
    assert montgomery.samples(tmp_path)[0].mask_paths[0].name == "MCUCXR_0001_0_mask.png"


def test_montgomery_only_one_lung_mask_is_an_error(tmp_path):
    root = _montgomery_tree(tmp_path)
    (root / "ManualMask/rightMask/MCUCXR_0001_0.png").unlink()
    with pytest.raises(
        ValueError, match=r"MCUCXR_0001_0\.png: ManualMask has one lung mask but no rightMask"
    ):
        montgomery.samples(root)


def test_antialiased_mask_is_thresholded_at_128(tmp_path):
    edge = _mask(48, 40, slice(10, 30), slice(24, 34))
    edge[10:30, 34] = 128  # kept
    edge[10:30, 23] = 127  # dropped
    root = _montgomery_tree(tmp_path, left=edge)
    mask = montgomery.samples(root)[0].read_lung_mask()
    assert mask[10:30, 34].all() and not mask[10:30, 23].any() and mask.sum() == 11 * 20 + 200


def test_mask_image_size_mismatch_names_both_files(tmp_path):
    root = _montgomery_tree(tmp_path, right=_mask(40, 40, slice(2, 8), slice(2, 8)))
    sample = montgomery.samples(root)[0]
    with pytest.raises(
        ValueError,
        match=r"rightMask/MCUCXR_0001_0\.png: mask is 40x40 px but its image "
        r".*CXR_png/MCUCXR_0001_0\.png is 40x48 px",
    ):
        sample.read_lung_mask()


def test_empty_mask_names_the_file(tmp_path):
    root = _montgomery_tree(tmp_path, left=np.full((48, 40), 127, np.uint8))
    with pytest.raises(ValueError, match=r"leftMask/MCUCXR_0001_0\.png: lung mask is empty"):
        montgomery.samples(root)[0].read_lung_mask()


def test_real_montgomery_set_and_kaggle_masks(real_samples):
    (sample,) = montgomery.samples(real_samples / "montgomery/MontgomerySet")
    assert sample.key == "MCUCXR_0004_0" and sample.mask_paths == ()
    assert sample.read_image().shape == (4892, 4020)
    kaggle = real_samples / "montgomery/derived_kaggle_512"
    for key in ("MCUCXR_0001_0", "MCUCXR_0004_0", "MCUCXR_0104_1"):
        merged = LungSample(
            "montgomery", key, kaggle / f"cxr/{key}.png", (kaggle / f"masks/{key}.png",)
        )
        mask = merged.read_lung_mask()
        assert mask.shape == (512, 512) and mask.dtype == bool
        lungs = _lungs(mask)
        if key == "MCUCXR_0001_0":  # a stray 1-pixel speck touching a lung only at a corner
            assert lungs == [1, 30957, 32409]
        else:
            assert len(lungs) == 2


def test_real_montgomery_clinical_readings(real_samples):
    readings = real_samples / "montgomery/MontgomerySet/ClinicalReadings"
    assert montgomery.read_clinical(readings / "MCUCXR_0001_0.txt") == {
        "sex": "F",
        "age": 27,
        "finding": "normal",
    }
    tb = montgomery.read_clinical(readings / "MCUCXR_0203_1.txt")
    assert tb["sex"] == "M" and tb["age"] == 68
    assert tb["finding"].startswith("bilateral changes of cavitary TB in upper lobes")
    for file in readings.glob("*.txt"):
        assert montgomery.read_clinical(file)["sex"] in ("F", "M")


def test_montgomery_bad_clinical_and_key(tmp_path):
    (tmp_path / "MCUCXR_0002_0.txt").write_text("Patient's Sex: F\nnormal\n")
    with pytest.raises(ValueError, match=r"MCUCXR_0002_0\.txt: no readable `Patient's Age:` line"):
        montgomery.read_clinical(tmp_path / "MCUCXR_0002_0.txt")
    with pytest.raises(ValueError, match="MCUCXR_0001_2"):
        montgomery.label_of("MCUCXR_0001_2")


# --- Shenzhen -------------------------------------------------------------------------


def test_real_shenzhen_images_and_masks(real_samples):
    root = real_samples / "shenzhen/derived_arcus"
    found = shenzhen.samples(root, root)  # masks_root above CXR_png: images are not masks
    assert len(found) == 11 and all(len(s.mask_paths) == 1 for s in found)
    assert found[0].mask_paths[0].name == "CHNCXR_0001_0_mask.png"
    for sample in found:
        image, mask = sample.read_image(), sample.read_lung_mask()
        assert mask.shape == image.shape and len(_lungs(mask)) == 2, sample.key


def test_shenzhen_kaggle_masks_without_suffix(real_samples, tmp_path):
    kaggle = real_samples / "shenzhen/derived_kaggle_512"
    (tmp_path / "CXR_png").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "CXR_png/CHNCXR_0327_1.png").symlink_to(kaggle / "cxr/CHNCXR_0327_1.png")
    (tmp_path / "masks/CHNCXR_0327_1.png").symlink_to(kaggle / "masks/CHNCXR_0327_1.png")
    _png(tmp_path / "CXR_png/CHNCXR_0400_0.png", np.zeros((40, 40), np.uint8))
    found = shenzhen.samples(tmp_path, tmp_path)
    assert [(s.key, len(s.mask_paths)) for s in found] == [
        ("CHNCXR_0327_1", 1),
        ("CHNCXR_0400_0", 0),
    ]
    assert len(_lungs(found[0].read_lung_mask())) == 2
    assert [shenzhen.label_of(s.key) for s in found] == [1, 0]
    _png(tmp_path / "masks/CHNCXR_0327_1_mask.png", np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match="Shenzhen lung mask CHNCXR_0327_1 found twice"):
        shenzhen.samples(tmp_path, tmp_path)


def test_real_shenzhen_clinical_readings(real_samples):
    readings = real_samples / "shenzhen/ChinaSet_AllFiles/ClinicalReadings"
    # the TB readings end lines with LF, the normal ones with CRLF; none has a final newline
    assert (readings / "CHNCXR_0566_1.txt").read_bytes() == b"male 38yrs  \t\nRight PTB \t"
    assert (readings / "CHNCXR_0003_0.txt").read_bytes() == b"female 48yrs\r\nnormal "
    assert shenzhen.read_clinical(readings / "CHNCXR_0566_1.txt") == {
        "sex": "M",
        "age": 38,
        "finding": "Right PTB",
    }
    assert shenzhen.read_clinical(readings / "CHNCXR_0003_0.txt") == {
        "sex": "F",
        "age": 48,
        "finding": "normal",
    }
    assert len([shenzhen.read_clinical(f) for f in readings.glob("*.txt")]) == 10


@pytest.mark.parametrize(
    ("text", "sex", "age"),
    [
        (b"femal 38yrs\r\nnormal", "F", 38),
        (b"male 16month\r\nnormal", "M", 16 / 12),
        (b"male 64days \t\r\nnormal", "M", 64 / 365.25),
        (b"Female, 28yrs\r\nnormal\r\n", "F", 28),
    ],
)
def test_shenzhen_clinical_variants(tmp_path, text, sex, age):
    (tmp_path / "reading.txt").write_bytes(text)
    assert shenzhen.read_clinical(tmp_path / "reading.txt") == {
        "sex": sex,
        "age": age,
        "finding": "normal",
    }


def test_shenzhen_unreadable_clinical(tmp_path):
    (tmp_path / "CHNCXR_0001_0.txt").write_bytes(b"unknown\r\nnormal")
    with pytest.raises(ValueError, match=r"CHNCXR_0001_0\.txt: no '<sex> <age>yrs' at the start"):
        shenzhen.read_clinical(tmp_path / "CHNCXR_0001_0.txt")


# --- all detector sets ----------------------------------------------------------------


def test_lung_samples_of_every_source_in_order(tmp_path):
    jsrt_root, scr_root = _jsrt_tree(tmp_path)
    montgomery_root = _montgomery_tree(tmp_path)
    _png(tmp_path / "ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png", np.zeros((40, 40), np.uint8))
    _png(
        tmp_path / "shenzhen_masks/mask/CHNCXR_0001_0_mask.png",
        _mask(40, 40, slice(5, 9), slice(5, 9)),
    )
    roots = {
        "jsrt": jsrt_root,
        "scr": scr_root,
        "montgomery": montgomery_root,
        "shenzhen": tmp_path / "ChinaSet_AllFiles",
        "shenzhen_masks": tmp_path / "shenzhen_masks",
    }
    found = lung_samples(**roots)
    assert [(s.source, s.key) for s in found] == [
        ("jsrt", "JPCLN001"),
        ("jsrt", "JPCNN001"),
        ("montgomery", "MCUCXR_0001_0"),
        ("montgomery", "MCUCXR_0104_1"),
        ("shenzhen", "CHNCXR_0001_0"),
    ]
    assert [s.source for s in lung_samples(**(roots | {"jsrt": None, "montgomery": None}))] == [
        "shenzhen"
    ]
    with pytest.raises(ValueError, match="data.scr is not"):
        lung_samples(**(roots | {"scr": None}))
    with pytest.raises(FileNotFoundError, match="nowhere: dataset folder not found"):
        lung_samples(**(roots | {"montgomery": tmp_path / "nowhere"}))
    with pytest.raises(ValueError, match="no CXR_png/MCUCXR_"):
        lung_samples(**(roots | {"montgomery": tmp_path / "shenzhen_masks"}))
