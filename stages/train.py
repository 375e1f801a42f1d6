"""Stage train_<setting>@<fold>: train one classifier on one fold and score its val and test folds.

    python stages/train.py --setting {baseline,yolo,stn,stn_eq} --fold K
    torchrun --standalone --nproc_per_node=N stages/train.py ...   (one run on N GPUs)

Reads data/folds.csv and the image store of the setting (data/resized, or data/crops for
yolo). Every setting scores every image of its validation and test folds, so the
settings are compared on the same images; a yolo image without a confident crop is scored
whole, and left out of yolo *training* when crop.low_conf is drop (counted). Writes
models/<setting>/fold<k>/model.pt, beside it ood.npz (the statistics of the model's
features that `cxrstn predict`'s input check compares new films with: cxrstn/ood.py), and
reports/runs/<setting>/fold<k>/ (predictions.csv, metrics.json, live/ with the per-epoch
curves). An interrupted run resumes from checkpoints/<setting>/fold<k>/last.pt, which is
removed once the outputs are written.
An STN setting (stn, stn_eq) reads its ST module's params from the section of its own name.
With known lung boxes (`data.lung_boxes`: the phantom's truth.csv), its curves and
metrics.json also say how well its windows frame the lungs.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import argparse
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from cxrstn.device import choose_device
from cxrstn.distributed import World
from cxrstn.folds import split_of
from cxrstn.images import ImageStore
from cxrstn.io import atomic_path, load_params, write_csv, write_json
from cxrstn.models import STN, gflops
from cxrstn.ood import STATS_FILE, training_stats
from cxrstn.roi import phantom_lung_boxes, quality, stn_window
from cxrstn.settings import SETTINGS, ST_SETTINGS
from cxrstn.thorax import check_low_conf
from cxrstn.train import (
    ST_PARAMS,
    model_file,
    predict,
    train_run,
    warm_start_path,
    window_slope,
)


def yolo_rows(frame: pd.DataFrame, crops: pd.DataFrame, low_conf: str) -> tuple:
    """The yolo run's rows and its counts of images without a confident crop, by split.

    Such images are scored whole in validation and test (the same images as the other
    settings); in training they are dropped when `low_conf` is drop, as in the paper.
    """
    check_low_conf(low_conf)
    whole = frame["path"].map(dict(zip(crops["path"], crops["status"] == "whole", strict=True)))
    if whole.isna().any():
        raise ValueError(f"data/crops.csv has no row for {frame.loc[whole.isna(), 'path'].iloc[0]}")
    whole = whole.astype(bool)
    counts = {
        f"n_{split}_without_crop": int((whole & (frame["split"] == split)).sum())
        for split in ("train", "val", "test")
    }
    dropped = whole & (frame["split"] == "train") & (low_conf == "drop")
    counts["n_train_dropped"] = int(dropped.sum())
    if dropped.sum() == (frame["split"] == "train").sum():
        raise ValueError(
            "data/crops.csv: no training image has a thorax box at crop.conf, and "
            "crop.low_conf is drop: the yolo setting has nothing to train on (a detector "
            "that is never confident; crop.low_conf: full trains on the whole images)"
        )
    return frame[~dropped].reset_index(drop=True), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=SETTINGS, required=True)
    parser.add_argument("--fold", type=int, required=True)
    args = parser.parse_args()
    params = load_params()
    setting, fold = args.setting, args.fold
    size = params["resize"]["size"]

    store_dir = "data/crops" if setting == "yolo" else "data/resized"
    store = ImageStore(store_dir)
    if store.size != size:
        raise ValueError(f"{store_dir}: images are {store.size} px, resize.size is {size}")
    folds = pd.read_csv("data/folds.csv")
    frame = folds.assign(split=split_of(folds["fold"], fold, params["split"]["folds"]))
    missing = frame.loc[~frame["path"].isin(store.paths), "path"]
    if len(missing):
        raise ValueError(
            f"{store_dir}: {len(missing)} images of data/folds.csv are missing, "
            f"e.g. {missing.iloc[0]}"
        )
    counts = {}
    if setting == "yolo":
        frame, counts = yolo_rows(frame, pd.read_csv("data/crops.csv"), params["crop"]["low_conf"])

    config = {
        "setting": setting,
        "fold": fold,
        "size": size,
        "classifier": params["classifier"],
        "stn": params[setting] if setting in ST_SETTINGS else None,
        "train": params["train"],
        "warm_start": warm_start_path(params[setting], fold) if setting in ST_SETTINGS else None,
    }
    checkpoint = Path(f"checkpoints/{setting}/fold{fold}/last.pt")
    run_dir = Path(f"reports/runs/{setting}/fold{fold}")
    lung_boxes = None
    if setting in ST_SETTINGS and params["data"]["lung_boxes"] is not None:
        lung_boxes = phantom_lung_boxes(params["data"]["lung_boxes"], frame["path"])
    world = World.from_env()  # several processes when started by torchrun (train.launcher)
    result = train_run(config, store, frame, checkpoint, run_dir / "live", lung_boxes, world)
    if not world.is_main:
        return  # the main process scores and writes everything

    device = choose_device(params["train"]["device"])
    scored = predict(
        result.model,
        store,
        frame[frame["split"] != "train"],
        params["classifier"]["batch_size"],
        device,
        params["train"]["workers"],
    )
    st_columns = list(ST_PARAMS) if setting in ST_SETTINGS else []
    columns = ["path", "label", "score", "split"] + st_columns
    write_csv(run_dir / "predictions.csv", scored[columns])

    # The input check of `cxrstn predict` (cxrstn/ood.py): the model's features of this
    # run's training images, and the threshold from its validation images.
    stats = training_stats(result.model, store, frame, device)
    stats.save(f"models/{setting}/fold{fold}/{STATS_FILE}")

    test = scored[scored["split"] == "test"]
    if test["label"].nunique() < 2:
        raise ValueError(f"fold {fold}: the test fold needs both classes to compute an AUC")
    model = result.model.float().cpu()
    classifier = model.classifier if isinstance(model, STN) else model
    input_size = params["classifier"]["input_size"]
    metrics = {
        "best_epoch": result.best_epoch,
        **result.budget,  # epochs and training images, a warm start's included
        "val_auc": round(result.val_auc, 6),
        "test_auc": round(float(roc_auc_score(test["label"], test["score"])), 6),
        "n_train": int((frame["split"] == "train").sum()),
        "n_val": int((frame["split"] == "val").sum()),
        "n_test": len(test),
        "n_params": sum(p.numel() for p in model.parameters()),
        "gflops_classifier": round(
            gflops(classifier, torch.zeros(1, 1, input_size, input_size)), 4
        ),
        "train_seconds": round(result.train_seconds, 2),
        "train_images_per_second": round(result.train_images_per_second, 2),
    }
    metrics |= counts
    if setting in ST_SETTINGS:
        metrics["gflops_st"] = round(gflops(model.st, torch.zeros(1, 1, size, size)), 4)
        metrics |= {f"test_{name}_mean": round(float(test[name].mean()), 4) for name in ST_PARAMS}
        metrics |= {f"test_{name}_std": round(float(test[name].std()), 4) for name in ST_PARAMS}
        metrics["test_equivariance_slope"] = round(
            window_slope(model, store, list(test["path"])), 4
        )
    if lung_boxes is not None:
        metrics |= window_quality(test, lung_boxes)
    write_json(run_dir / "metrics.json", metrics)
    with atomic_path(f"models/{setting}/fold{fold}/model.pt") as tmp:
        torch.save(model_file(result, config), tmp)

    checkpoint.unlink(missing_ok=True)
    for parent in list(checkpoint.parents)[:3]:  # fold<k>, <setting>, checkpoints
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
    print(f"{setting} fold {fold}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))


def window_quality(test: pd.DataFrame, lung_boxes: pd.DataFrame) -> dict:
    """How the test windows frame the lung boxes (`roi.quality`), for the run's metrics.json."""
    windows = stn_window(*(test[name].to_numpy() for name in ST_PARAMS))
    boxes = lung_boxes.set_index("path").loc[test["path"], ["x0", "y0", "x1", "y1"]].to_numpy()
    names = {"roi_iou": "test_window_iou"}
    return {
        names.get(key, key.replace("roi_", "test_")): round(value, 4)
        for key, value in quality(windows, boxes).items()
    }


if __name__ == "__main__":
    run_stage(main)
