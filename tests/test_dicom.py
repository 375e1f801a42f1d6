"""DICOM reading through pydicom: the presentation LUT and the Part 10 check."""

import numpy as np
import pytest
from test_predict import dicom  # pytest puts tests/ on the path

from cxrstn.images import ImageError, is_dicom, read_image

VALUES = np.tile(np.arange(0, 4000, 4000 / 64), (48, 1)).astype(
    np.uint16
)  # dark left, bright right
PLAIN = np.rint(VALUES.astype(float) * (255 / VALUES.max())).astype(np.uint8)


def read(tmp_path, name, **attributes) -> np.ndarray:
    dicom(VALUES, **attributes).save_as(tmp_path / name, enforce_file_format=True)
    return read_image(tmp_path / name)


def test_presentation_lut_shape_inverse_is_inverted(tmp_path):
    image = read(tmp_path, "inverse.dcm", PresentationLUTShape="INVERSE")
    assert np.array_equal(image, 255 - PLAIN)
    assert image[0, 0] == 255 and image[0, -1] == 0


def test_monochrome1_with_its_inverse_shape_is_inverted_once(tmp_path):
    """DX files state MONOCHROME1's inversion twice; applying both would undo it."""
    both = read(tmp_path, "dx.dcm", PhotometricInterpretation="MONOCHROME1",
                PresentationLUTShape="INVERSE")  # fmt: skip
    alone = read(tmp_path, "m1.dcm", PhotometricInterpretation="MONOCHROME1")
    assert np.array_equal(both, alone) and np.array_equal(both, 255 - PLAIN)


def test_identity_shape_changes_nothing(tmp_path):
    assert np.array_equal(read(tmp_path, "id.dcm", PresentationLUTShape="IDENTITY"), PLAIN)


def test_an_unsupported_shape_names_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"lin\.dcm: .*'LIN OD'.* not supported"):
        read(tmp_path, "lin.dcm", PresentationLUTShape="LIN OD")


def test_is_dicom_by_content_not_by_name(tmp_path):
    dicom(VALUES).save_as(tmp_path / "no_suffix", enforce_file_format=True)
    (tmp_path / "short.dcm").write_bytes(b"DICM")
    (tmp_path / "image.png").write_bytes(b"\x89PNG" + bytes(200))
    assert is_dicom(tmp_path / "no_suffix")
    assert not is_dicom(tmp_path / "short.dcm")
    assert not is_dicom(tmp_path / "image.png")
    assert not is_dicom(tmp_path / "missing.dcm")
    assert not is_dicom(tmp_path)  # a folder
