"""Why the ST window does not follow each image's lungs: the module, the estimator or the labels?

    python bench/stn_signal.py [--fold 0] [--model models/stn/fold0/model.pt] [--epochs 5]
                               [--threads 1] [--seed 0] [--json PATH]

On one fold of the pipeline's data (its resized store, folds and known lung boxes, so the
phantom or data with `data.lung_boxes`), a fresh ST module is fitted four ways on the
training images (`cxrstn.window_signal`): told each lung window; by REINFORCE rewarded by
each window's distance to its lung window; by REINFORCE rewarded by the classifier's loss
on the label, the classifier of the trained STN `--model` held fixed; by the equivariance
term alone. The module's recipe and learning rates are that STN's (`stn.reinforce_pairs`
on; `stn.reinforce_sigma` [0.05, 0.15] if it had none; `--model
models/stn_eq/fold0/model.pt` for the fourth setting's). Prints how each one's windows
frame the test images' lungs, beside the trained STN's own windows. About a minute on
one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from cxrstn import window_signal
from cxrstn.folds import split_of
from cxrstn.images import ImageStore
from cxrstn.io import load_params
from cxrstn.models import STN, build_model
from cxrstn.roi import phantom_lung_boxes
from cxrstn.train import load_model

COLUMNS = ("roi_iou", "roi_lung_coverage", "roi_r_centre", "roi_r_height")


def split_data(store: ImageStore, frame: pd.DataFrame, lung_boxes: str, split: str):
    """Images (N x 1 x S x S in [0, 1]), labels and lung boxes of one split."""
    rows = frame[frame["split"] == split].reset_index(drop=True)
    images = torch.stack(
        [torch.tensor(store[path], dtype=torch.float32)[None] / 255 for path in rows.path]
    )
    lungs = phantom_lung_boxes(lung_boxes, rows.path)[["x0", "y0", "x1", "y1"]].to_numpy()
    return images, rows.label.to_numpy(), lungs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a trained STN (default: the fold's)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per learner")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params()
    if not params["data"].get("lung_boxes"):
        sys.exit("stn_signal needs known lung boxes: data.lung_boxes is null")
    model_path = args.model or Path(f"models/stn/fold{args.fold}/model.pt")
    critic = load_model(model_path)
    if not isinstance(critic, STN):
        sys.exit(f"{model_path}: not an STN")
    stn = dict(torch.load(model_path, weights_only=True)["config"]["stn"])
    stn["reinforce_sigma"] = stn["reinforce_sigma"] or [0.05, 0.15]
    stn["reinforce_pairs"] = True
    folds = pd.read_csv("data/folds.csv")
    frame = folds.assign(split=split_of(folds["fold"], args.fold, params["split"]["folds"]))
    store, boxes = ImageStore("data/resized"), params["data"]["lung_boxes"]
    images, labels, lungs = split_data(store, frame, boxes, "train")
    test_images, _, test_lungs = split_data(store, frame, boxes, "test")
    batch, epochs = int(params["classifier"]["batch_size"]), args.epochs
    classifier = {**params["classifier"], "weights": None}

    def fresh() -> STN:
        """A new ST module (the seed's initial weights) in front of the trained classifier."""
        torch.manual_seed(args.seed)
        module = build_model("stn", classifier, stn).st
        return STN(critic.classifier, module, tuple(stn["reinforce_sigma"]), True)

    learners = {
        "told the lung windows (MSE)": lambda: window_signal.fit_to_boxes(
            fresh(), images, lungs, epochs, batch, stn, args.seed
        ),
        "REINFORCE, rewarded by the lung window": lambda: window_signal.reinforce(
            fresh(), images, window_signal.box_loss(lungs), epochs, batch, stn, args.seed
        ),
        "REINFORCE, rewarded by the label (classifier fixed)": lambda: window_signal.reinforce(
            fresh(), images, window_signal.label_loss(labels), epochs, batch, stn, args.seed
        ),
        "the equivariance term alone (no label, no box)": lambda: window_signal.fit_equivariant(
            fresh(), images, epochs, batch, stn, args.seed
        ),
    }
    print(
        f"fold {args.fold}: {len(images)} training, {len(test_images)} test images; "
        f"{epochs} epochs of {batch}; module recipe: {stn}"
    )
    started = time.perf_counter()
    results = {
        "the trained STN's own windows": window_signal.framing(critic.st, test_images, test_lungs)
    }
    for name, learn in learners.items():
        begun = time.perf_counter()
        results[name] = window_signal.framing(learn().st, test_images, test_lungs)
        print(f"  {name}: {time.perf_counter() - begun:.0f} s")
    print(f"\n{'windows':52s} {'IoU':>6s} {'cover':>6s} {'r ctr':>6s} {'r hgt':>6s}", end="")
    print(f" {'ctr std':>8s} {'hgt std':>8s}")
    for name, row in results.items():
        values = [row[key] for key in COLUMNS]
        stds = row["window_centre_std"], row["window_height_std"]
        print(f"{name:52s} " + " ".join(f"{v:6.3f}" for v in values), end="")
        print("".join(f" {v:8.4f}" for v in stds))
    centres, heights = (
        (test_lungs[:, 1] + test_lungs[:, 3]) / 2,
        test_lungs[:, 3] - test_lungs[:, 1],
    )
    print(f"{'the lung boxes':52s} {'':27s} {centres.std():8.4f} {heights.std():8.4f}")
    print(f"total {time.perf_counter() - started:.0f} s, {args.threads} thread(s)")
    if args.json:
        record = {"fold": args.fold, "epochs": epochs, "stn": stn} | results
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
