"""Stage shortcut: does each setting's classifier read the burned-in lettering?

Scores every test image of every run three ways with the run's own model (see
`cxrstn.shortcut`): as stored, with phantom-style lettering burned in outside its lung
box, and re-rendered by the phantom without its text. Writes reports/shortcut.csv (one
row per setting x test image: scores and decisions of each variant) and
reports/shortcut.json (per setting: AUC of each variant and its change, share of
decisions that flip at the operating threshold).

Only the phantom has lung boxes for every image and a text-free version of it: with real
CheXpert data (data.chexpert outside data/phantom) the stage writes n_images 0 for every
setting and says why. The measurement at another text-label correlation is an experiment:
`dvc exp run -S phantom.text_label_correlation=0` regenerates the phantom and re-runs the
whole pipeline, this stage included, and `dvc metrics diff` compares the two.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import os

import pandas as pd
import torch

from cxrstn.device import choose_device
from cxrstn.images import ImageStore
from cxrstn.io import load_params, write_csv, write_json
from cxrstn.metrics import compared_settings, load_runs
from cxrstn.shortcut import (
    add_decisions,
    check_reproduced,
    chexpert_tasks,
    cropped_variants,
    is_phantom,
    make_variants,
    resized_variants,
    score_variants,
    summarize,
)
from cxrstn.sources import chexpert
from cxrstn.train import load_model

RUNS_DIR = "reports/runs"
PHANTOM_DIR = "data/phantom"
COLUMNS = [
    "setting",
    "fold",
    "path",
    "label",
    "text",
    "threshold",
    "score",
    "score_burned",
    "score_removed",
    "called",
    "called_burned",
    "called_removed",
]


def main() -> None:
    params = load_params()
    n_folds, size = int(params["split"]["folds"]), int(params["resize"]["size"])
    settings = compared_settings(params, RUNS_DIR)
    if not is_phantom(params["data"]["chexpert"], PHANTOM_DIR):
        print(
            f"shortcut: skipped: data.chexpert ({params['data']['chexpert']}) is not the "
            f"phantom's; real films have neither lung boxes for every image nor a text-free "
            "version, so there is nothing to burn text around or remove it from"
        )
        write_csv("reports/shortcut.csv", pd.DataFrame(columns=COLUMNS))
        write_json("reports/shortcut.json", {s: {"n_images": 0} for s in settings})
        return

    truth = pd.read_csv(f"{PHANTOM_DIR}/truth.csv")
    truth = truth[truth["dataset"] == "chexpert"].rename(columns={"file": "path"})
    tasks = chexpert_tasks(params["phantom"])
    runs = load_runs(RUNS_DIR, settings, n_folds)
    store = ImageStore("data/resized")
    csv_path = chexpert.find_csv(params["data"]["chexpert"])
    seed = int(params["shortcut"]["seed"])
    workers = int(params["shortcut"]["workers"]) or os.cpu_count()
    crops = pd.read_csv("data/crops.csv") if "yolo" in settings else None
    if params["train"]["threads"]:  # scored with the threads the runs trained and scored with
        torch.set_num_threads(int(params["train"]["threads"]))
    device = choose_device(params["train"]["device"])
    batch_size = int(params["classifier"]["batch_size"])

    parts = []
    for fold in range(n_folds):
        tests = {s: runs[s, fold][runs[s, fold]["split"] == "test"] for s in settings}
        paths = sorted(set().union(*(set(test["path"]) for test in tests.values())))
        images = truth.set_index("path").reindex(paths)
        missing = images.index[images["x0"].isna()]
        if len(missing):
            raise ValueError(
                f"{PHANTOM_DIR}/truth.csv: no lung box for {len(missing)} test images of "
                f"fold {fold}, e.g. {missing[0]}"
            )
        files = {path: chexpert.image_file(csv_path, path) for path in paths}
        # Decoded as the resize stage decodes for the stored images, and at full size as
        # the crop stage does for the yolo crops.
        decodes = {"stored": size} | ({"cropped": None} if "yolo" in settings else {})
        variants = make_variants(files, images.reset_index(), tasks, seed, decodes, workers)
        resized = resized_variants(variants["stored"], size)
        for setting, test in tests.items():
            model = load_model(f"models/{setting}/fold{fold}/model.pt", device)
            if setting == "yolo":
                seen = cropped_variants(
                    variants["cropped"], resized, crops, store.size, size, test["path"]
                )
            else:
                seen = resized
            scored = score_variants(model, seen, test, batch_size, device)
            check_reproduced(scored, test, f"{RUNS_DIR}/{setting}/fold{fold}/predictions.csv")
            text = scored["path"].map(images["words"]) > 0
            parts.append(scored.assign(setting=setting, fold=fold, text=text.to_numpy()))

    table = add_decisions(pd.concat(parts, ignore_index=True), float(params["eval"]["recall"]))
    summary = summarize(table)
    write_csv("reports/shortcut.csv", table[COLUMNS])
    write_json("reports/shortcut.json", summary)
    for setting, values in summary.items():
        print(
            f"shortcut: {setting}: AUC {values['auc']:.2f}, with lettering "
            f"{values['delta_auc_burned']:+.2f} ({values['flip_burned']:.1f}% decisions flip), "
            f"text removed {values['delta_auc_removed']:+.2f} "
            f"({values['flip_removed']:.1f}% of {values['n_text']} texted images flip)"
        )


if __name__ == "__main__":
    run_stage(main)
