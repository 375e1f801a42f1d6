"""read_image on every real sample and on synthetic files of each format and failure; resizing."""

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrstn.images import (
    ImageError,
    ImageStore,
    attached_rows,
    new_store,
    raw_img_side,
    raw_img_to_display,
    read_image,
    read_raw_img,
    resize_square,
    write_store,
)


def test_real_montgomery_full_size_png(real_samples):
    image = read_image(real_samples / "montgomery/MontgomerySet/CXR_png/MCUCXR_0004_0.png")
    assert image.dtype == np.uint8 and image.shape == (4892, 4020)  # 4020 wide, 4892 high


def test_real_chexpert_jpgs_are_height_320(real_samples):
    chexpert = real_samples / "chexpert"
    frontal = read_image(
        chexpert / "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"
    )
    assert frontal.dtype == np.uint8 and frontal.shape == (320, 390)  # 390 wide, 320 high
    assert read_image(chexpert / "extra_unidentified/gaetandi_view1_frontal.jpg").shape == (
        320,
        320,
    )


def test_real_nih_and_derived_pngs(real_samples):
    files = sorted((real_samples / "other").rglob("*.png"))
    files += sorted((real_samples / "shenzhen").rglob("*.png"))
    files += sorted((real_samples / "montgomery/derived_kaggle_512").rglob("*.png"))
    assert len(files) == 2 + 24 + 6
    for file in files:
        image = read_image(file)
        with Image.open(file) as header:
            width, height = header.size
        assert image.dtype == np.uint8 and image.shape == (height, width), file


def test_jsrt_raw_file_is_inverted_for_display(tmp_path):
    raw = np.zeros((64, 64), dtype=np.uint16)
    raw[0, :4] = [0, 4095, 2048, 1000]
    file = tmp_path / "JPCLN001.IMG"
    raw.astype(">u2").tofile(file)
    image = read_image(file)
    assert image.shape == (64, 64)
    # round((4095 - v) * 255 / 4095): 255, 0, 127.47 -> 127, 192.73 -> 193
    assert image[0, :4].tolist() == [255, 0, 127, 193]


def test_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    twelve_bit = np.zeros((40, 40), dtype=np.uint16)
    twelve_bit[0, :3] = [1000, 2048, 4095]  # max 4095 needs 12 bits
    sixteen_bit = np.zeros((40, 40), dtype=np.uint16)
    sixteen_bit[0, :2] = [32768, 65535]
    eight_bit = np.zeros((40, 40), dtype=np.uint16)
    eight_bit[0, :2] = [100, 200]  # fits 8 bits: unchanged
    for name, values in [("12", twelve_bit), ("16", sixteen_bit), ("8", eight_bit)]:
        Image.fromarray(values).save(tmp_path / f"{name}.png")
        with Image.open(tmp_path / f"{name}.png") as written:
            assert written.mode == "I;16"
    # 1000 * 255 / 4095 = 62.27, 2048 * 255 / 4095 = 127.53
    assert read_image(tmp_path / "12.png")[0, :3].tolist() == [62, 128, 255]
    assert read_image(tmp_path / "16.png")[0, :2].tolist() == [128, 255]  # 127.50 -> 128
    assert read_image(tmp_path / "8.png")[0, :2].tolist() == [100, 200]


def test_palette_rgb_rgba_and_la_become_luminance(tmp_path):
    indices = np.zeros((40, 40), dtype=np.uint8)
    indices[0, :3] = [0, 1, 2]
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 100, 100, 100, 255, 0, 0] + [0] * 759)
    palette.save(tmp_path / "palette.png")
    rgb = np.zeros((40, 40, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = (100, 100, 100), (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 40), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([rgb[..., 0], np.zeros((40, 40), np.uint8)]), mode="LA").save(
        tmp_path / "la.png"
    )
    # PIL luminance: (19595 R + 38470 G + 7471 B + 2**15) >> 16, so pure red 255 -> 76
    assert read_image(tmp_path / "palette.png")[0, :3].tolist() == [0, 100, 76]
    assert read_image(tmp_path / "rgb.png")[0, :2].tolist() == [100, 76]
    assert read_image(tmp_path / "rgba.png")[0, :2].tolist() == [100, 76]  # alpha dropped
    assert read_image(tmp_path / "la.png")[0, :2].tolist() == [100, 255]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((64, 48), dtype=np.uint8)  # 48 wide, 64 high as stored
    stored[:16, :16] = 255  # bright block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "rotated.jpg")
    assert image.shape == (48, 64)  # displayed 64 wide, 48 high
    assert image[:16, -16:].mean() > 240  # the block is now at the top-right
    assert image[:16, :16].mean() < 15


def _write_dicom(path, pixels=None, photometric="MONOCHROME1"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    if pixels is not None:
        dataset.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=12)
    dataset.save_as(path, enforce_file_format=True)


def test_dicom_monochrome1_is_min_max_scaled_and_inverted(tmp_path):
    pixels = np.zeros((40, 40), dtype=np.uint16)
    pixels[0, :3] = [1000, 4095, 0]
    _write_dicom(tmp_path / "x.dcm", pixels)
    image = read_image(tmp_path / "x.dcm")
    # min-max 0..4095 -> 0..255, then inverted: 1000 -> 255 - round(62.27) = 193
    assert image.shape == (40, 40) and image[0, :3].tolist() == [193, 0, 255]
    _write_dicom(tmp_path / "y.dcm", pixels, photometric="MONOCHROME2")
    assert read_image(tmp_path / "y.dcm")[0, :3].tolist() == [62, 255, 0]


def test_dicom_without_pixel_data_is_an_image_error(tmp_path):
    _write_dicom(tmp_path / "empty.dcm")
    assert "PixelData" not in pydicom.dcmread(tmp_path / "empty.dcm")
    with pytest.raises(ImageError, match=r"empty\.dcm: DICOM file has no pixel data"):
        read_image(tmp_path / "empty.dcm")


def test_unreadable_dicom_is_an_image_error(tmp_path):
    (tmp_path / "text.dcm").write_text("not a DICOM file")
    with pytest.raises(ImageError, match=r"text\.dcm: not a readable DICOM file"):
        read_image(tmp_path / "text.dcm")
    _write_dicom(tmp_path / "whole.dcm", np.zeros((40, 40), dtype=np.uint16))
    (tmp_path / "cut.dcm").write_bytes((tmp_path / "whole.dcm").read_bytes()[:-1000])
    with pytest.raises(ImageError, match=r"cut\.dcm: cannot decode DICOM pixel data"):
        read_image(tmp_path / "cut.dcm")


def _png_bytes(tmp_path) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    return (tmp_path / "whole.png").read_bytes()


def test_bad_files_raise_image_errors_naming_the_file(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image at all")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "whole.jpg")
    jpeg = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "corrupt.jpg").write_bytes(jpeg[:200] + b"\x00" * 50)
    png = _png_bytes(tmp_path)
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    Image.fromarray(np.zeros((31, 400), np.uint8)).save(tmp_path / "strip.png")
    expected = {
        "missing.png": "file not found",
        "zero.png": r"empty file \(0 bytes\)",
        "text.jpg": "not a recognised image format",
        "corrupt.jpg": "corrupt or truncated image",
        "truncated.png": "corrupt or truncated image",
        "dot.png": r"too small \(1x1 px",
        "strip.png": r"too small \(400x31 px",
    }
    for name, reason in expected.items():
        with pytest.raises(ImageError, match=rf"{name.replace('.', '[.]')}: {reason}"):
            read_image(tmp_path / name)


def test_resize_square_averages_when_shrinking():
    image = np.kron(np.array([[0, 100], [200, 50]], dtype=np.uint8), np.ones((4, 2), np.uint8))
    assert image.shape == (8, 4)  # non-square: the aspect is not kept
    assert resize_square(image, 2).tolist() == [[0, 100], [200, 50]]


def test_resize_square_interpolates_linearly_when_enlarging():
    image = np.array([[0, 200], [0, 200]], dtype=np.uint8)
    # pixel centres of the 4-wide row sit at source x = -0.25, 0.25, 0.75, 1.25 (edges clamp)
    assert resize_square(image, 4)[0].tolist() == [0, 50, 150, 200]


def test_resize_square_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8 2-D"):
        resize_square(np.zeros((4, 4), dtype=np.float32), 2)


def test_raw_img_round_trip_and_display(tmp_path):
    raw = np.random.default_rng(0).integers(0, 4096, (64, 64)).astype(np.uint16)
    raw.astype(">u2").tofile(tmp_path / "JPCLN001.IMG")
    assert raw_img_side(tmp_path / "JPCLN001.IMG") == 64
    read = read_raw_img(tmp_path / "JPCLN001.IMG")
    assert read.dtype == np.uint16 and np.array_equal(read, raw)
    display = raw_img_to_display(np.array([[0, 4095, 2048, 1000]], dtype=np.uint16))
    assert display.dtype == np.uint8 and display.tolist() == [[255, 0, 127, 193]]


def test_raw_img_wrong_size_and_values(tmp_path):
    (tmp_path / "JPCNN002.IMG").write_bytes(b"\x00" * 1000)
    with pytest.raises(
        ValueError, match=r"JPCNN002\.IMG: 1,000 bytes .* 8,388,608 bytes for 2048x2048"
    ):
        read_raw_img(tmp_path / "JPCNN002.IMG")
    np.full((32, 32), 5000, dtype=">u2").tofile(tmp_path / "JPCNN003.IMG")
    with pytest.raises(ImageError, match=r"JPCNN003\.IMG: value 5000 above the 12-bit maximum"):
        read_raw_img(tmp_path / "JPCNN003.IMG")


def _large_radiograph_jpeg(path, width=1160, height=1414, exif=None, colour=False):
    """A phantom radiograph (bone, lungs, text edges, film noise) saved as a JPEG."""
    from cxrstn.phantom.radiograph import render_frontal

    film = render_frontal(np.random.default_rng(3), width, height, words=["PORTABLE", "R"])
    pixels = np.rint(np.clip(film.image, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if colour:
        image = image.convert("RGB")
    image.save(path, quality=95, **({"exif": exif} if exif else {}))
    return pixels


def test_min_side_decodes_a_large_jpeg_at_the_smallest_dct_scale_above_it(tmp_path):
    _large_radiograph_jpeg(tmp_path / "big.jpg")
    # 1160x1414: 1/4 gives 290x354 (>= 256 both ways), 1/8 would give 145x177
    assert read_image(tmp_path / "big.jpg", min_side=256).shape == (354, 290)
    assert read_image(tmp_path / "big.jpg", min_side=300).shape == (707, 580)  # 1/2
    assert read_image(tmp_path / "big.jpg", min_side=600).shape == (1414, 1160)  # full
    assert read_image(tmp_path / "big.jpg").shape == (1414, 1160)


def test_fast_decode_then_resize_is_nearly_a_full_decode_then_resize(tmp_path):
    """The stored images barely change: measured on 2320x2828 phantoms at 512 px, mean
    abs difference 0.37 gray levels, 99th percentile 1, maximum 46 at hard text edges;
    here (1160x1414 to 256 px, text relatively larger) 0.73, 5 and 52."""
    _large_radiograph_jpeg(tmp_path / "big.jpg")
    full = resize_square(read_image(tmp_path / "big.jpg"), 256).astype(int)
    fast = resize_square(read_image(tmp_path / "big.jpg", min_side=256), 256).astype(int)
    difference = np.abs(full - fast)
    assert fast.shape == (256, 256)
    assert difference.mean() < 1.0
    assert np.percentile(difference, 95) <= 3
    assert np.percentile(difference, 99) <= 8  # the rest: a few pixels at the sharpest edges


def test_fast_decode_applies_exif_orientation_and_converts_colour(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    _large_radiograph_jpeg(tmp_path / "rotated.jpg", exif=exif, colour=True)
    full = read_image(tmp_path / "rotated.jpg")
    fast = read_image(tmp_path / "rotated.jpg", min_side=256)
    assert full.shape == (1160, 1414) and fast.shape == (290, 354)  # displayed landscape
    assert fast.dtype == np.uint8 and fast.ndim == 2
    shrunk = resize_square(full, 256).astype(int) - resize_square(fast, 256).astype(int)
    assert np.abs(shrunk).mean() < 1.0  # same orientation: else the difference is huge


def test_min_side_leaves_other_formats_at_full_resolution(tmp_path):
    Image.fromarray(np.full((400, 300), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", min_side=64).shape == (400, 300)


def _film(row: int) -> np.ndarray:
    return np.random.default_rng(row).integers(0, 256, (24, 24), dtype=np.uint8)


def _write_film(row: int) -> int:
    """A worker's job: its row of the store being built, or nothing for every third row."""
    if row % 3 == 1:
        return row  # "unreadable": the row stays unwritten
    attached_rows()[row] = _film(row)
    return -1


def test_rows_written_by_worker_processes_give_the_same_store_as_write_store(tmp_path):
    paths = [f"p{row}/view1_frontal.jpg" for row in range(7)]
    written = write_store(
        tmp_path / "serial", paths, (None if r % 3 == 1 else _film(r) for r in range(7)), 24
    )
    with new_store(tmp_path / "workers", paths, 24) as store, store.pool(2) as pool:
        for row, unreadable in enumerate(pool.imap(_write_film, range(7))):
            if unreadable != row:
                store.keep(row)
    assert written == len(store.kept) == 5  # rows 1 and 4 excluded
    for name in ("index.csv", "images.npy"):  # byte for byte
        assert (tmp_path / "workers" / name).read_bytes() == (
            tmp_path / "serial" / name
        ).read_bytes()
    assert ImageStore(tmp_path / "workers").paths == [paths[r] for r in (0, 2, 3, 5, 6)]


def test_a_store_that_fails_while_built_leaves_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError, match="decoder died"),
        new_store(tmp_path / "store", ["a.jpg"], 8) as store,
    ):
        store.rows[0] = 7
        store.keep(0)
        raise RuntimeError("decoder died")
    assert list(tmp_path.iterdir()) == []
