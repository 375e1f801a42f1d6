"""Stage crop: thorax crops of every CheXpert image for the yolo setting.

Runs models/detector.pt on data/resized/ (with test-time augmentation if crop.tta); an
image whose best box reaches crop.conf is cut to the square around the box and resized
back to resize.size, any other is dropped or kept whole as crop.low_conf says. Writes
data/crops.csv (every image, its box, conf and status), data/crops/ (image store of the
images the yolo setting uses) and reports/crop.json.
"""

import time

from cxrstn.detector import detect, load_detector
from cxrstn.images import ImageStore, resize_square, write_store
from cxrstn.io import load_params, run_stage, write_csv, write_json
from cxrstn.thorax import LOW_CONF_POLICIES, crop_table, crop_to_thorax


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
    )
    table = crop_table(store.paths, detections, crop["conf"], crop["low_conf"])
    kept = table[table["status"] != "dropped"]

    def images():
        for row in kept.itertuples():
            image = store[row.path]
            if row.status == "cropped":
                yield crop_to_thorax(image, (row.x0, row.y0, row.x1, row.y1), size)
            else:
                yield resize_square(image, size)

    write_store("data/crops", kept["path"].tolist(), images(), size)
    seconds = time.perf_counter() - started
    write_csv("data/crops.csv", table)

    statuses = table["status"].value_counts()
    summary = {
        "images": len(table),
        **{
            status: int(statuses.get(status, 0))
            for status in ["cropped", *LOW_CONF_POLICIES.values()]
        },
        "share_cropped": round(float((table["status"] == "cropped").mean()), 4),
        "conf_median": round(float(table["conf"].median()), 4),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(table) / seconds, 1),
    }
    write_json("reports/crop.json", summary)
    print(
        f"crop: {summary['cropped']} of {len(table)} images cropped at conf >= {crop['conf']} "
        f"({summary['share_cropped']:.1%}), {len(kept)} kept, {seconds:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
