"""Stage thorax_boxes: lung masks of JSRT/SCR, Montgomery and Shenzhen -> YOLO thorax dataset.

Writes data/thorax/ (images, labels, boxes.csv, excluded.csv, data.yaml), the counts per
source in reports/thorax_boxes.json and box overlays in reports/figures/thorax_boxes.png.
Images without a mask are counted and skipped; bad masks are excluded and listed, and the
stage stops when the excluded share exceeds data.max_excluded.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import pandas as pd

from cxrstn.io import atomic_path, check_excluded, load_params, write_json
from cxrstn.sources.lung_sets import lung_samples
from cxrstn.thorax import build_yolo_dataset, plot_box_overlays


def main() -> None:
    params = load_params()
    data, detector = params["data"], params["detector"]
    samples = lung_samples(
        data["jsrt"], data["scr"], data["montgomery"], data["shenzhen"], data["shenzhen_masks"]
    )
    with atomic_path("data/thorax") as tmp:
        counts = build_yolo_dataset(
            samples, tmp, detector["imgsz"], detector["val_fraction"], detector["seed"]
        )
        total = counts["total"]
        for row in pd.read_csv(tmp / "excluded.csv").head(20).itertuples():
            print(f"  excluded {row.source} {row.key}: {row.message}")
        check_excluded(total["excluded"], total["images"], data["max_excluded"], "detector images")
    with atomic_path("reports/figures/thorax_boxes.png") as tmp:
        plot_box_overlays("data/thorax", tmp)
    write_json("reports/thorax_boxes.json", counts)
    print(
        f"thorax_boxes: {total['train']} train + {total['val']} val boxes from {total['images']} "
        f"images ({total['without_mask']} without mask, {total['excluded']} excluded)"
    )


if __name__ == "__main__":
    run_stage(main)
