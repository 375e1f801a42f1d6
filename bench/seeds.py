"""Seed study: does Table II hold still when only the training seed changes?

    python bench/seeds.py [--seeds 0 1 2] [--rev HEAD] [--keep DIR]

In a fresh clone of `--rev` (committed files only), sharing this workspace's DVC cache so
that the data stages it already ran are checked out rather than re-run, it reproduces the
pipeline once (`make repro`'s runner) and then queues one experiment per other seed
(`dvc exp run --queue -S train.seed=K`), runs the queue as many at a time as `make repro`
runs stages (cores / torch threads per stage) and
reads every experiment's `reports/metrics.json` from `dvc exp show --json`. For each
setting it prints the mean test AUC of each seed (with its std over the folds), the
largest difference between two seeds' means and the largest fold std: the targets are at
most 2 and 4 AUC points.

`dvc exp run` commits to git, so the study needs a git user name and email (the clone's
experiments use this repository's): where git has none it stops before cloning, with one
line saying to run `make setup` (which sets a repository-local one) or `git config`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, fresh_clone, run_measured  # noqa: E402
from cxrstn.cli import GIT_IDENTITY_FIX, git_identity  # noqa: E402
from cxrstn.io import load_params  # noqa: E402
from cxrstn.parallel import default_jobs  # noqa: E402

SETTINGS = ("baseline", "yolo", "stn")
TARGETS = {"between_seeds": 2.0, "fold_std": 4.0}


def experiment_metrics(show: list) -> dict[int, dict]:
    """{train.seed: reports/metrics.json} of the workspace and of the study's experiments
    (named seed<K>) in the output of `dvc exp show --json`; other experiments are left out."""
    found = {}

    def visit(node) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            ours = node.get("rev") == "workspace" or str(node.get("name")).startswith("seed")
            if ours and isinstance(data, dict) and "params" in data and "metrics" in data:
                params = data["params"].get("params.yaml", {}).get("data", {})
                metrics = data["metrics"].get("reports/metrics.json", {}).get("data")
                seed = params.get("train", {}).get("seed")
                if metrics and seed is not None:
                    found[int(seed)] = metrics
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(show)
    return found


def summarise(by_seed: dict[int, dict]) -> dict[str, dict]:
    """Per setting: each seed's (mean, std) AUC, the largest difference between seeds'
    means and the largest fold std."""
    table = {}
    for setting in SETTINGS:
        runs = {s: m[setting]["auc"] for s, m in sorted(by_seed.items()) if setting in m}
        means = [r["mean"] for r in runs.values()]
        table[setting] = {
            "seeds": {s: (r["mean"], r["std"]) for s, r in runs.items()},
            "between_seeds": max(means) - min(means) if means else float("nan"),
            "fold_std": max(r["std"] for r in runs.values()) if runs else float("nan"),
        }
    return table


def print_table(table: dict[str, dict]) -> None:
    seeds = sorted({s for row in table.values() for s in row["seeds"]})
    header = ["setting", *(f"seed {s}" for s in seeds), "largest diff", "largest fold std"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for setting, row in table.items():
        cells = [f"{m:.2f} ± {sd:.2f}" for m, sd in row["seeds"].values()]
        marks = {k: "" if row[k] <= TARGETS[k] else " (over target)" for k in TARGETS}
        print(
            f"| {setting} | "
            + " | ".join(cells)
            + f" | {row['between_seeds']:.2f}{marks['between_seeds']}"
            + f" | {row['fold_std']:.2f}{marks['fold_std']} |"
        )
    print(
        f"targets: means within {TARGETS['between_seeds']} AUC points between seeds, "
        f"fold std at most {TARGETS['fold_std']}"
    )


def require_git_identity(root: Path = ROOT) -> tuple[str, str]:
    """The git user name and email the study's experiments will be committed with (those
    `dvc exp run` would use in `root`); one line and exit 1 when git has none, before
    anything is cloned or run."""
    name, email = git_identity(root) or (None, None)
    if not (name and email):
        sys.exit(
            "bench/seeds.py: git has no user name and email, and dvc exp run commits: "
            + GIT_IDENTITY_FIX
        )
    return name, email


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rev", default="HEAD", help="commit to study (committed files only)")
    parser.add_argument("--keep", metavar="DIR", help="keep the clone in DIR (new folder)")
    args = parser.parse_args()
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", args.rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    name, email = require_git_identity()
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cxrstn-seeds-"))
    dest = workdir / "clone"
    env = fresh_clone(rev, dest)
    # A clone does not inherit this repository's own config (where `make setup` may have put
    # the identity): its experiments commit with the same one.
    for key, value in (("user.name", name), ("user.email", email)):
        subprocess.run(["git", "-C", str(dest), "config", key, value], check=True)

    def dvc(*command: str) -> str:
        done = subprocess.run(
            ["dvc", *command], cwd=dest, env=env, capture_output=True, text=True, check=True
        )
        return done.stdout

    started = time.perf_counter()
    dvc("cache", "dir", "--local", str(ROOT / ".dvc" / "cache"))  # reuse what ran here
    print(f"seed study of {rev[:7]} in {dest}: dvc repro (its own seed)", flush=True)
    run_measured([sys.executable, "-m", "cxrstn.parallel"], dest, env)
    own = yaml.safe_load((dest / "params.yaml").read_text())["train"]["seed"]
    for seed in args.seeds:
        if seed != own:
            dvc("exp", "run", "--queue", "--name", f"seed{seed}", "-S", f"train.seed={seed}")
    dvc("queue", "start", "--jobs", str(default_jobs(load_params(dest / "params.yaml"))))
    while "Queued" in (status := dvc("queue", "status")) or "Running" in status:
        time.sleep(20)
    if "Failed" in status:
        raise RuntimeError(f"an experiment failed:\n{status}\n{dvc('queue', 'logs', 'seed1')}")
    by_seed = experiment_metrics(json.loads(dvc("exp", "show", "--json")))
    missing = set(args.seeds) - set(by_seed)
    if missing:
        raise RuntimeError(f"no metrics for seeds {sorted(missing)}")
    print(f"\n{len(args.seeds)} seeds in {(time.perf_counter() - started) / 60:.1f} min\n")
    print_table(summarise({s: by_seed[s] for s in args.seeds}))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
