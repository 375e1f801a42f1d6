"""Stage resize: every labelled CheXpert image -> square grayscale image store data/resized/.

Unreadable images are excluded and listed with the reason in reports/resize.json; the
stage stops when their share exceeds data.max_excluded. data/originals.csv pins the bytes
of every original it read (path, size, xxh3_128): the crop stage, which cuts from the same
originals, depends on that table instead of walking the whole dataset folder again.

Worker processes write each image straight into the store's memory map, so only a short
tuple comes back per image; with XXH3 instead of sha256 for the pin this brought the stage
from about 80 % to about 91 % of the decode floor (docs/performance.md).
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import hashlib
import os
import time
from functools import partial

import pandas as pd
import xxhash
from tqdm import tqdm

from cxrstn.images import ImageError, attached_rows, new_store, read_image, resize_square
from cxrstn.io import check_excluded, load_params, write_csv, write_json
from cxrstn.sources import chexpert


def resize_into(job: tuple[int, os.PathLike], size: int):
    """Decode one image (a large JPEG at reduced size, see `read_image`), resize it into
    its row of the store being built, and pin the file: (reason or None, bytes, xxh3_128).
    A file that cannot be used leaves its row unwritten and gives the reason."""
    row, file = job
    nbytes = digest = None
    if file.is_file():
        with open(file, "rb") as f:
            digest = hashlib.file_digest(f, xxhash.xxh3_128).hexdigest()
        nbytes = file.stat().st_size
    try:
        attached_rows()[row] = resize_square(read_image(file, min_side=size), size)
    except ImageError as error:
        return str(error).removeprefix(f"{file}: "), nbytes, digest
    return None, nbytes, digest


def main() -> None:
    params = load_params()
    size = params["resize"]["size"]
    workers = params["resize"]["workers"] or os.cpu_count()
    csv_path = chexpert.find_csv(params["data"]["chexpert"])
    paths = pd.read_csv("data/labels.csv")["path"].tolist()
    files = [chexpert.image_file(csv_path, p) for p in paths]

    start = time.perf_counter()
    excluded, originals = [], []
    # The pool closes first (every row written), then the store is indexed and moved in.
    with new_store("data/resized", paths, size) as store, store.pool(workers) as pool:
        results = pool.imap(partial(resize_into, size=size), enumerate(files), chunksize=8)
        results = tqdm(results, total=len(files), desc="resize", unit="img")
        for row, (reason, nbytes, digest) in enumerate(results):
            if reason is None:
                store.keep(row)
            else:
                excluded.append({"path": paths[row], "reason": reason})
            originals.append({"path": paths[row], "bytes": nbytes, "xxh3_128": digest})
    stored = len(store.kept)
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
