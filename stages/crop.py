"""Stage crop: thorax crops of every CheXpert image for the yolo setting.

Runs models/detector.pt on data/resized/ (with test-time augmentation if crop.tta); an
image whose best box reaches crop.conf is cut to the square around the box, from the
original file (the highest resolution there is, not the resized copy), and resized to
resize.size; any other is kept whole. Writes data/crops.csv (every image, its
box, conf and status), data/crops/ (the image store the yolo setting reads: every image,
so that all settings score the same test images) and reports/crop.json. Whether yolo
training uses the whole images is the train stage's business (crop.low_conf).
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import os
import time
from functools import partial
from multiprocessing import Pool

from tqdm import tqdm

from cxrstn.detector import detect, load_detector
from cxrstn.images import ImageStore, resize_square, write_store
from cxrstn.io import load_params, write_csv, write_json
from cxrstn.sources import chexpert
from cxrstn.thorax import CROP_STATUSES, crop_file, crop_table


def main() -> None:
    params = load_params()
    crop, size, detector = params["crop"], params["resize"]["size"], params["detector"]
    store = ImageStore("data/resized")
    model = load_detector("models/detector.pt")

    started = time.perf_counter()
    detections = detect(
        model,
        (store[path] for path in store.paths),
        imgsz=detector["imgsz"],
        batch=crop["batch"],
        device=detector["device"],
        tta=crop["tta"],
        threads=detector["threads"],
    )
    table = crop_table(store.paths, detections, crop["conf"])

    csv_path = chexpert.find_csv(params["data"]["chexpert"])
    cropped = table[table["status"] == "cropped"]
    jobs = [
        (chexpert.image_file(csv_path, row.path), (row.x0, row.y0, row.x1, row.y1), store.size)
        for row in cropped.itertuples()
    ]
    workers = params["resize"]["workers"] or os.cpu_count()
    with Pool(workers) as pool:
        crops = pool.imap(partial(crop_file, size=size), jobs, chunksize=8)
        crops = iter(tqdm(crops, total=len(jobs), desc="crop", unit="img"))

        def images():  # in table order, streamed: the crops never sit in memory together
            for row in table.itertuples():
                yield (
                    next(crops) if row.status == "cropped" else resize_square(store[row.path], size)
                )

        write_store("data/crops", table["path"].tolist(), images(), size)
    seconds = time.perf_counter() - started
    write_csv("data/crops.csv", table)

    statuses = table["status"].value_counts()
    summary = {
        "images": len(table),
        **{status: int(statuses.get(status, 0)) for status in CROP_STATUSES},
        "share_cropped": round(float((table["status"] == "cropped").mean()), 4),
        "conf_median": round(float(table["conf"].median()), 4),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(table) / seconds, 1),
    }
    write_json("reports/crop.json", summary)
    print(
        f"crop: {summary['cropped']} of {len(table)} images cropped at conf >= {crop['conf']} "
        f"({summary['share_cropped']:.1%}), the others kept whole, {seconds:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
