"""Image IO for every source format, resizing, square crops and the image store.

The image store is how later stages read images fast: one directory holding
`images.npy` (uint8, N x S x S, opened as a memory map) and `index.csv` (`path, row`),
where `path` is the image's dataset-relative key (for CheXpert the CSV's `Path`).
`cxrstn show` exports any stored image as PNG.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrstn.io import atomic_path, reserve


def _pillow_open():
    """Pillow's own `Image.open`, whichever library was imported first.

    Importing ultralytics replaces `Image.open` with a wrapper that, on a file Pillow
    cannot identify, tries to install a HEIF plugin instead of raising; the wrapper's
    module keeps Pillow's function as `_image_open`.
    """
    opener = Image.open
    if opener.__module__ == "PIL.Image":
        return opener
    return getattr(sys.modules[opener.__module__], "_image_open", opener)


PIL_OPEN = _pillow_open()
"""Pillow's opener, used for every image read (never a network fetch on a bad file)."""

MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
"""Most pixels an image may declare: Pillow refuses more as a decompression bomb, and DICOM
is held to the same (about 179 million, e.g. 13,000 x 13,000)."""

MIN_SIDE = 32
"""Smallest usable image side in pixels; anything smaller is an icon or a broken export."""


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def read_image(path: str | os.PathLike, min_side: int | None = None) -> np.ndarray:
    """Decode any supported radiograph file to a uint8 2-D grayscale array (bone bright).

    `min_side` (optional) allows a JPEG to be decoded at reduced size for a caller that
    will shrink it anyway: libjpeg's DCT scaling (Pillow's draft mode) decodes at 1/2, 1/4
    or 1/8 of each side, the smallest of these whose sides are still >= `min_side`, so a
    full-size CheXpert JPEG (about 2320x2828) bound for 512 px decodes at 580x707 several
    times faster. DCT scaling averages 2x2..8x8 blocks, which is what an area resize does
    too, so the stored images barely change (see tests/test_images.py). Without
    `min_side`, and for every other format, the image comes at full resolution.

    Formats: anything PIL reads (JPEG with its EXIF orientation applied, PNG in 8-bit,
    16-bit, palette, RGB(A) or LA form, GIF masks), raw JSRT `.IMG` and DICOM (`.dcm`,
    `.dicom`, or any file with the DICOM preamble; compressed transfer syntaxes as far as
    pydicom's installed decoders go, else an error naming the syntax).
    Colour and palette images are converted to luminance. Images deeper than 8 bits are
    scaled to 0-255 by the bit depth their maximum value needs (see `_scale_bit_depth`);
    DICOM goes through its modality and VOI LUTs and is min-max scaled, MONOCHROME1 inverted.

    Raises ImageError ("<path>: <reason>") for a missing, empty, unreadable, truncated or
    unsupported file and for an image under MIN_SIDE pixels on a side.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".img":
        image = raw_img_to_display(read_raw_img(path))
    elif suffix in (".dcm", ".dicom") or is_dicom(path):
        image = _read_dicom(path)
    else:
        image = _read_pil(path, min_side)
    height, width = image.shape
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{path}: too small ({width}x{height} px, at least {MIN_SIDE} a side)")
    return image


RAW_IMG_MAX = 4095
"""Largest value of a raw `.IMG` file (12-bit)."""


def raw_img_side(path: str | os.PathLike) -> int:
    """The side n of a raw `.IMG` (JSRT's format: no header, n x n big-endian 16-bit words),
    from its file size (2 * n**2 bytes), so smaller look-alikes read the same way."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    size = path.stat().st_size
    side = math.isqrt(size // 2)
    if size == 0 or size != 2 * side * side:
        raise ImageError(
            f"{path}: {size:,} bytes is not a square image of 16-bit words (2*n*n bytes; "
            f"a real JSRT .IMG is 8,388,608 bytes for 2048x2048)"
        )
    return side


def read_raw_img(path: str | os.PathLike) -> np.ndarray:
    """Raw 12-bit values of an `.IMG` file as a uint16 n x n array (high values dark)."""
    side = raw_img_side(path)
    raw = np.fromfile(path, dtype=">u2").reshape(side, side).astype(np.uint16)
    if raw.max() > RAW_IMG_MAX:
        raise ImageError(f"{path}: value {raw.max()} above the 12-bit maximum {RAW_IMG_MAX}")
    return raw


def raw_img_to_display(raw: np.ndarray) -> np.ndarray:
    """Raw 12-bit values to uint8, high raw = dark: round((4095 - v) * 255 / 4095)."""
    if raw.max() > RAW_IMG_MAX:
        raise ValueError(f"value {raw.max()} above the 12-bit maximum {RAW_IMG_MAX}")
    inverted = RAW_IMG_MAX - raw.astype(np.uint32)
    return ((inverted * 255 + RAW_IMG_MAX // 2) // RAW_IMG_MAX).astype(np.uint8)


def _read_pil(path: Path, min_side: int | None = None) -> np.ndarray:
    try:
        with PIL_OPEN(path) as image:
            if min_side is not None and image.format == "JPEG":
                # A square request keeps both sides >= min_side whatever the EXIF rotation;
                # "L" has libjpeg emit luminance directly for a colour JPEG.
                side = max(min_side, MIN_SIDE)  # never below the usable minimum
                image.draft("L", (side, side))
            image.load()  # decode everything now, so a truncated file fails here
            ImageOps.exif_transpose(image, in_place=True)
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                return _scale_bit_depth(np.asarray(image), path)
            if image.mode == "F":
                raise ImageError(f"{path}: unsupported pixel format (32-bit float)")
            return np.asarray(image.convert("L"))
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageError(f"{path}: not a recognised image format") from error
    except Image.DecompressionBombError as error:  # refused from the header, nothing decoded
        raise ImageError(f"{path}: too large to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: corrupt or truncated image ({error})") from error


def _scale_bit_depth(values: np.ndarray, path: Path) -> np.ndarray:
    """Map integer pixels of a >8-bit image to 0-255 by the bit depth of their maximum.

    Radiographs are often 10-14-bit values stored in 16-bit words, so `>> 8` would leave a
    12-bit image nearly black. The depth is the number of bits the largest value needs
    (at least 8): a 12-bit image maps 0..4095 to 0..255, a full 16-bit one 0..65535. Unlike
    a per-image min-max stretch, this keeps a dark image dark and does not amplify the
    noise of a nearly flat one. Values at most 255 pass unchanged.
    """
    if values.min() < 0:
        raise ImageError(f"{path}: negative pixel values")
    values = values.astype(np.uint32)
    top = (1 << max(8, int(values.max()).bit_length())) - 1
    return ((values * 255 + top // 2) // top).astype(np.uint8)


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether the file is DICOM Part 10 ("DICM" after the 128-byte preamble), whatever its name:
    archives often store DICOM files without a suffix. pydicom's own check, made safe for
    files that cannot be opened or are shorter than the preamble."""
    from pydicom.misc import is_dicom as has_preamble

    try:
        return has_preamble(path)
    except OSError:  # unreadable: the decoder that is tried instead reports it
        return False


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom  # lazy: only DICOM input needs it
    from pydicom.pixels import (
        apply_modality_lut,
        apply_presentation_lut,
        apply_voi_lut,
        get_decoder,
    )

    try:
        # Large elements (the pixel data) stay on disk until used: the header is checked
        # first, so a file of 500 frames or of 65535 x 65535 pixels is refused unread.
        dataset = pydicom.dcmread(path, defer_size="1 MB")
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise ImageError(f"{path}: not a readable DICOM file ({error})") from error
    if "PixelData" not in dataset:
        raise ImageError(f"{path}: DICOM file has no pixel data")
    frames = dataset.get("NumberOfFrames") or 1
    if int(frames) != 1:
        raise ImageError(f"{path}: DICOM holds {frames} frames; one radiograph frame expected")
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    if rows * columns > MAX_PIXELS:
        raise ImageError(
            f"{path}: DICOM declares {columns}x{rows} pixels, more than the {MAX_PIXELS:,} "
            "allowed (the limit Pillow applies to other formats)"
        )
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is not None:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as error:
            raise ImageError(
                f"{path}: DICOM transfer syntax {syntax.name} ({syntax}) cannot be decoded: "
                "pydicom has no decoder for it"
            ) from error
        if not decoder.is_available:
            missing = "; ".join(f"{k}: {v}" for k, v in decoder.missing_dependencies.items())
            raise ImageError(
                f"{path}: DICOM transfer syntax {syntax.name} ({syntax}) needs a decoder "
                f"that is not installed ({missing})"
            )
    try:
        values = dataset.pixel_array
    except Exception as error:  # pydicom raises several types for undecodable pixel data
        name = f" ({syntax.name})" if syntax is not None else ""
        raise ImageError(f"{path}: cannot decode DICOM pixel data{name}: {error}") from error
    if dataset.get("SamplesPerPixel", 1) != 1 or values.ndim != 2:
        raise ImageError(f"{path}: expected one grayscale frame, got pixel array {values.shape}")
    values = apply_voi_lut(apply_modality_lut(values, dataset), dataset)
    # The presentation LUT gives P-values, where high is bright. A DX image states its
    # MONOCHROME1 inversion twice (Photometric Interpretation, and Presentation LUT Shape
    # INVERSE, which the standard requires with it): it is inverted once. A MONOCHROME2
    # image with INVERSE, or any image with a LUT sequence, goes through pydicom's
    # presentation LUT; an unsupported shape is an error naming the file.
    monochrome1 = dataset.get("PhotometricInterpretation") == "MONOCHROME1"
    shape = str(dataset.get("PresentationLUTShape", "")).strip().upper()
    if "PresentationLUTSequence" in dataset or (shape and not monochrome1):
        try:
            values = apply_presentation_lut(values, dataset)
        except NotImplementedError as error:
            raise ImageError(f"{path}: {error}") from error
        monochrome1 = False  # the P-values are already bright-high
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    image = np.rint(scaled).astype(np.uint8)
    if monochrome1:  # low values are bright
        image = 255 - image
    return image


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 2-D image to size x size without keeping the aspect, as the paper does.

    Area averaging when no side grows (it does not alias when shrinking); bilinear otherwise.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 2-D image, got {image.dtype} {image.shape}")
    height, width = image.shape
    shrinking = height >= size and width >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


class ImageStore:
    """Read-only view of a stored set of equally sized square grayscale images.

    Kept rather than a library's dataset class: bench/bench.py (b) measures this memory
    map 6.4x faster than decoding the files every epoch and 12-39x faster than
    torchxrayvision's CheX_Dataset + XRayResizer on the same images (docs/performance.md).
    """

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        index = pd.read_csv(directory / "index.csv")
        self.directory = directory
        self.paths: list[str] = index["path"].tolist()
        self.rows: dict[str, int] = dict(zip(index["path"], index["row"], strict=True))
        self.array = np.load(directory / "images.npy", mmap_mode="r")

    @property
    def size(self) -> int:
        return int(self.array.shape[1])

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: str) -> bool:
        return path in self.rows

    def __getitem__(self, path: str) -> np.ndarray:
        return np.asarray(self.array[self.rows[path]])


class NewStore:
    """An image store being built by `new_store`: one uint8 size x size row per path.

    Rows are filled in this process (`rows`) or by the worker processes of `pool()`, which
    map the same file (`attached_rows()`), so that decoded images need not travel back
    through a pipe; `keep(row)` marks a row as written. A row never kept (an unreadable
    image) stays out of the index.
    """

    def __init__(self, images_file: Path, rows: np.ndarray):
        self.images_file, self.rows = images_file, rows
        self.kept: list[int] = []

    def keep(self, row: int) -> None:
        self.kept.append(row)

    def pool(self, workers: int) -> multiprocessing.pool.Pool:
        """Worker processes that write rows of this store through `attached_rows()`."""
        return multiprocessing.Pool(workers, initializer=attach_rows, initargs=(self.images_file,))


@contextmanager
def new_store(directory: str | os.PathLike, paths: list[str], size: int) -> Iterator[NewStore]:
    """Build an image store of `paths` (row i for paths[i]) under a temporary name.

    On a clean exit the index of the kept rows is written and the store moved into place
    as `directory`; on an error nothing is left behind. Worker processes that write rows
    must have finished before the block ends.
    """
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        images_file = tmp / "images.npy"
        rows = np.lib.format.open_memmap(
            images_file, mode="w+", dtype=np.uint8, shape=(len(paths), size, size)
        )
        # the mapping is sparse: claim its disk now, so a full disk is an error, not SIGBUS
        reserve(images_file, rows.offset + rows.nbytes, directory)
        store = NewStore(images_file, rows)
        yield store
        rows.flush()
        kept = sorted(set(store.kept))
        pd.DataFrame({"path": [paths[row] for row in kept], "row": kept}).to_csv(
            tmp / "index.csv", index=False, lineterminator="\n"
        )


_attached_rows: np.ndarray | None = None


def attach_rows(images_file: str | os.PathLike) -> None:
    """Map the rows of a store being built into this process (`NewStore.pool`'s worker
    initializer, so each worker maps the file once)."""
    global _attached_rows
    _attached_rows = np.load(images_file, mmap_mode="r+")


def attached_rows() -> np.ndarray:
    """The writable rows this process attached with `attach_rows`."""
    if _attached_rows is None:
        raise RuntimeError("no image store attached: write rows from NewStore.pool() workers")
    return _attached_rows


def write_store(
    directory: str | os.PathLike,
    paths: list[str],
    images: Iterable[np.ndarray | None],
    size: int,
) -> int:
    """Write `images` (in the order of `paths`, each uint8 size x size) as an image store.

    An image given as None is left out (its row stays unused and its path is not
    indexed): callers exclude unreadable images this way without a second pass. Returns
    the number of images stored.
    """
    with new_store(directory, paths, size) as store:
        seen = 0
        for row, image in enumerate(images):
            seen += 1
            if image is None:
                continue
            if image.shape != (size, size) or image.dtype != np.uint8:
                raise ValueError(
                    f"{paths[row]}: expected uint8 {size}x{size}, got {image.dtype} {image.shape}"
                )
            store.rows[row] = image
            store.keep(row)
        if seen != len(paths):
            raise ValueError(f"image store got {seen} images for {len(paths)} paths")
    return len(store.kept)


def square_box(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The square of side max(box width, box height) centred on the box, in pixel coordinates.

    At the image border the square is shifted inwards so that it stays whole inside the
    image (no padding, no distortion); a square larger than the image is clipped to it.
    """
    side = min(round(max(x1 - x0, y1 - y0)), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side
