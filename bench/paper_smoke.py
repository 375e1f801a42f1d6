"""Smoke run of the paper's profile: every stage of `params.paper.yaml` end to end, tiny.

    python bench/paper_smoke.py [--keep DIR]

Copies the project to a temporary folder and runs the paper's configuration there as one
`dvc exp run` (the options `cxrstn paper-args params.paper.yaml` prints), changed only
where a CPU smoke run must be: the data are a tiny phantom whose CheXpert look-alikes are
full-size (2320 x 2828 JPEGs, the full release's size), three folds, one epoch per
classifier and detector, float32 training (bf16 is a GPU option) and no COCO weights
(none can be downloaded here). Everything
else is the paper's: full-width VGG16 on 3-channel 512 px inputs, the authors'
localization net, YOLOv5s at 640 px. It proves that the profile runs and fits in memory;
its numbers mean nothing. Prints each stage's wall time and the peak memory.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrstn.cli import set_args  # noqa: E402
from cxrstn.io import flatten  # noqa: E402

SMOKE = {
    "phantom.chexpert_patients": 24,
    "phantom.chexpert_size": [2320, 2828],
    "phantom.jsrt_images": 8,
    "phantom.montgomery_images": 8,
    "phantom.shenzhen_images": 8,
    "split.folds": 3,
    "split.fold_ids": [0, 1, 2],
    "detector.epochs": 1,
    "detector.weights": None,
    "classifier.epochs": 1,
    "train.workers": 1,
    # bf16 autocast is for GPUs: a CPU without bf16 units emulates it, many times slower.
    "train.amp": "none",
    # A one-epoch detector is never confident: train yolo on whole images, not on none.
    "crop.low_conf": "full",
}
"""What the smoke run changes in the paper's profile, and nothing else."""


def copy_project(dest: Path) -> None:
    """The project's files as git sees them (tracked and untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())


def smoke_args(params: dict, paper: dict) -> list[str]:
    """`-S` options: the paper's profile, with the phantom's paths and the smoke changes."""
    profile = yaml.safe_load(yaml.safe_dump(paper))
    profile["data"] = {**params["data"]}  # the phantom's look-alikes, not /data/...
    for key, value in SMOKE.items():
        section, *path, leaf = key.split(".")
        target = profile[section]
        for part in path:
            target = target[part]
        target[leaf] = value
    missing = set(SMOKE) - set(flatten(profile))
    if missing:
        raise SystemExit(f"error: smoke keys not in the profile: {sorted(missing)}")
    return set_args(params, profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = yaml.safe_load((ROOT / "params.paper.yaml").read_text())
    work = args.keep or Path(tempfile.mkdtemp(prefix="paper-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    env = os.environ | {
        "DVC_SITE_CACHE_DIR": str(work / ".cache/dvc"),
        "DVC_GLOBAL_CONFIG_DIR": str(work / ".cache/dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(work),
        "GIT_AUTHOR_NAME": "smoke",
        "GIT_AUTHOR_EMAIL": "smoke@localhost",
        "GIT_COMMITTER_NAME": "smoke",
        "GIT_COMMITTER_EMAIL": "smoke@localhost",
    }
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "smoke"]):
        subprocess.run(command, cwd=work, env=env, check=True)
    command = ["dvc", "exp", "run", "--name", "paper-smoke", *smoke_args(params, paper)]
    print("in", work, ":", " ".join(command), flush=True)
    started = time.perf_counter()
    stage_started, stage, times = started, None, {}
    with subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            found = re.search(r"Running stage '([^']+)'", line)
            if found or "Ran experiment" in line:
                now = time.perf_counter()
                if stage:
                    times[stage] = now - stage_started
                stage, stage_started = (found.group(1) if found else None), now
            sys.stdout.write(line)
    total = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print("\nstage wall times (s):")
    for name, seconds in times.items():
        print(f"  {name:24s} {seconds:7.1f}")
    print(f"total {total / 60:.1f} min; peak memory of one process {peak_gb:.1f} GB")
    if process.returncode:
        raise SystemExit(f"paper smoke run failed (exit {process.returncode}); see {work}")
    metrics = (work / "reports/metrics.json").read_text()
    print("reports/metrics.json (meaningless on a tiny phantom):", metrics[:400])
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
