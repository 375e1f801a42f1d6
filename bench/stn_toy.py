"""Does the ST module learn per-image attention on a task made to need it? (issue 20, item 1)

    python bench/stn_toy.py [--threads 1] [--steps N] [--seed 0] [--no-oracle] [--json PATH]
                            [--half 1] [--target 40 44] [--probe] [--equivariance W]

Trains, with the project's classifier, ST module and Adam groups (`cxrstn.toy`), the
classifier on the whole canvas, on the target's own box (the oracle: what a perfect
window gives) and behind the ST module, each on the same stream of fresh images, and
scores them on the same test images. Prints the AUCs, the STN's window IoU with the target
and the Pearson r of the window's and target's centres, and the verdict; exits 1 if any
criterion fails. About 3 minutes on one free core at the default recipe.

`--probe` measures instead why the window does not find the target (about 3 minutes):
whether the ST module can learn each target's window when it is told the boxes
(`toy.learn_windows_from_boxes`), and whether the classification loss of a classifier
that reads the target in any window points a centred window towards it, through the
sampler's gradient and by finite differences (`toy.probe_window_gradient`). `--half` and
`--target` change the glyphs' half-side and the target's side range.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from cxrstn import toy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=1000, help="test images")
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle classifier")
    parser.add_argument("--json", type=Path, help="write the whole result here")
    parser.add_argument("--half", type=int, default=toy.Task().half, help="glyph half-side")
    parser.add_argument(
        "--target", type=int, nargs=2, default=toy.Task().target, help="target side range, px"
    )
    parser.add_argument("--probe", action="store_true", help="measure the learning signal")
    parser.add_argument(
        "--equivariance",
        type=float,
        default=0.0,
        help="stn.equivariance_weight added to the recipe (default 0: the recipe as it is)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = replace(toy.Task(), half=args.half, target=tuple(args.target))
    if args.probe:
        return probe(task, args.seed)
    recipe = toy.Recipe() if args.steps is None else replace(toy.Recipe(), steps=args.steps)
    recipe = replace(recipe, stn=recipe.stn | {"equivariance_weight": args.equivariance})
    settings = ("whole", "stn") if args.no_oracle else ("whole", "oracle", "stn")
    started = time.perf_counter()
    result = toy.check(recipe, task, args.seed, args.test, settings, log=print)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["threads"] = args.threads
    result["verdict"] = toy.verdict(result)
    print(f"\n{recipe.steps} steps of {recipe.batch} per model, {args.threads} thread(s)")
    for setting in settings:
        row = result[setting]
        extra = (
            ""
            if setting != "stn"
            else (
                f"  IoU {row['iou']:.3f}  r_x {row['r_x']:.3f}  r_y {row['r_y']:.3f}"
                f"  theta mean {row['theta_mean']} std {row['theta_std']}"
            )
        )
        print(f"{setting:>7}: test AUC {row['auc']:.4f}  ({row['seconds']:.0f} s){extra}")
    for name, (value, ok) in result["verdict"].items():
        print(f"{name:>9}: {value:+.4f}  (needs >= {toy.PASS[name]})  {'pass' if ok else 'FAIL'}")
    print(f"total {result['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=list))
    return 0 if all(ok for _, ok in result["verdict"].values()) else 1


def probe(task: toy.Task, seed: int, steps: int = 300, classifier_steps: int = 2500) -> int:
    recipe = toy.Recipe()
    started = time.perf_counter()
    told = toy.learn_windows_from_boxes(recipe, task, steps, seed)
    print(
        f"ST module told the boxes, {steps} steps: IoU {told['iou']:.3f}, "
        f"r_x {told['r_x']:.3f}, r_y {told['r_y']:.3f}  ({time.perf_counter() - started:.0f} s)"
    )
    classifier = toy.train_on_random_windows(recipe, task, classifier_steps, seed=seed)
    print(f"classifier on random windows, {classifier_steps} steps")
    for side in (0.3, 0.45):
        found = toy.probe_window_gradient(classifier, task, side=side, seed=seed)
        print(
            f"  centred window of side {side}: zero gradient in {found['zero_gradient']:.0%}; "
            f"-gradient towards the target in {found['gradient_towards_x']:.0%} (x), "
            f"{found['gradient_towards_y']:.0%} (y) of the rest; loss lower 0.15 towards it "
            f"than away in {found['loss_lower_towards']:.0%} of the "
            f"{found['partly_in_view']:.0%} with the target partly in view"
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
