"""Stage resize: every labelled CheXpert image -> square grayscale image store data/resized/.

Unreadable images are excluded and listed with the reason in reports/resize.json; the
stage stops when their share exceeds data.max_excluded. data/originals.csv pins the bytes
of every original it read (path, size, sha256): the crop stage, which cuts from the same
originals, depends on that table instead of walking the whole dataset folder again.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import hashlib
import os
import time
from functools import partial
from multiprocessing import Pool

import pandas as pd
from tqdm import tqdm

from cxrstn.images import ImageError, read_image, resize_square, write_store
from cxrstn.io import check_excluded, load_params, write_csv, write_json
from cxrstn.sources import chexpert


def load_resized(file, size):
    """Decode (a large JPEG at reduced size, see `read_image`) and resize one image, and
    take the file's size and sha256; an unusable file gives (None, reason, ...)."""
    size_and_digest = (None, None)
    if file.is_file():
        with open(file, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        size_and_digest = (file.stat().st_size, digest)
    try:
        return resize_square(read_image(file, min_side=size), size), None, *size_and_digest
    except ImageError as error:
        return None, str(error).removeprefix(f"{file}: "), *size_and_digest


def main() -> None:
    params = load_params()
    size = params["resize"]["size"]
    workers = params["resize"]["workers"] or os.cpu_count()
    csv_path = chexpert.find_csv(params["data"]["chexpert"])
    paths = pd.read_csv("data/labels.csv")["path"].tolist()
    files = [chexpert.image_file(csv_path, p) for p in paths]

    start = time.perf_counter()
    excluded, originals = [], []
    with Pool(workers) as pool:
        results = pool.imap(partial(load_resized, size=size), files, chunksize=8)
        results = tqdm(results, total=len(files), desc="resize", unit="img")

        def images():
            for path, (image, reason, nbytes, digest) in zip(paths, results, strict=True):
                if image is None:
                    excluded.append({"path": path, "reason": reason})
                originals.append({"path": path, "bytes": nbytes, "sha256": digest})
                yield image

        stored = write_store("data/resized", paths, images(), size)
    seconds = time.perf_counter() - start
    write_csv("data/originals.csv", pd.DataFrame(originals).astype({"bytes": "Int64"}))

    reasons = pd.Series([e["reason"].split(" (")[0] for e in excluded], dtype=str)
    write_json(
        "reports/resize.json",
        {
            "images": len(paths),
            "stored": stored,
            "size": size,
            "excluded": len(excluded),
            "excluded_by_reason": reasons.value_counts().to_dict(),
            "excluded_files": excluded,
            "seconds": round(seconds, 1),
        },
    )
    print(f"resize: {stored} of {len(paths)} images stored at {size}px in {seconds:.1f} s")
    for item in excluded[:20]:
        print(f"  excluded {item['path']}: {item['reason']}")
    check_excluded(len(excluded), len(paths), params["data"]["max_excluded"], "images")


if __name__ == "__main__":
    run_stage(main)
