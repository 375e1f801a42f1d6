"""Reproduce the DVC pipeline with independent stages running side by side.

    python -m cxrstn.parallel [--jobs N] [stage ...]    (make repro)
    python -m cxrstn.parallel --gpus 0,1,2,3            (one stage per GPU)

DVC runs one stage at a time, but documents that separate `dvc repro` processes may run
independent stages at once: the repo lock is released while a stage's command runs.
This runner does exactly that, in dependency order: each stage of the pipeline (or of
the targets and everything upstream of them) is started as its own
`dvc --wait-for-lock repro --single-item <stage>` once every stage it depends on has
finished, at most `--jobs` at a time. DVC itself decides per stage whether to run it or
skip it as unchanged, writes dvc.lock and fills the cache, so the result is what
`dvc repro` gives, and a plain `dvc repro` afterwards has nothing to do.

Why these flags: without `--wait-for-lock` a process gives up on the repo lock after
3 s, so a stage that finishes while another process holds the lock (to load the
pipeline or hash outputs) fails after its work is done; `--single-item` keeps each
process from re-checking its upstream stages, which another process may be writing.
Among the stages ready to start, the one with the most stages downstream goes first
(the detector before the classifiers that do not need it), so the long chains start early;
a stage that needs more cores than are free waits for them, and nothing starts before it.
Each stage's output goes to `.cache/parallel/<stage>.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import time
from graphlib import TopologicalSorter
from pathlib import Path

from cxrstn.io import load_params


def stage_graph(root: str | os.PathLike = ".") -> tuple[list[str], dict[str, set[str]]]:
    """The pipeline's stage names in dvc.yaml order, and each stage's upstream stages."""
    from dvc.repo import Repo

    # Stage addresses are relative to the working directory: read them from the root.
    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph  # an edge points from a stage to a stage it depends on
        stages = [stage for stage in repo.index.stages if stage in graph]
        upstream = {s.addressing: {d.addressing for d in graph.successors(s)} for s in stages}
    return [s.addressing for s in stages], upstream


def needed(targets: list[str], upstream: dict[str, set[str]]) -> set[str]:
    """The targets and every stage they depend on, directly or not."""
    unknown = sorted(set(targets) - upstream.keys())
    if unknown:
        raise ValueError(f"unknown stages {unknown}; the pipeline has {sorted(upstream)}")
    wanted, todo = set(), list(targets)
    while todo:
        stage = todo.pop()
        if stage not in wanted:
            wanted.add(stage)
            todo.extend(upstream[stage])
    return wanted


def downstream_counts(upstream: dict[str, set[str]]) -> dict[str, int]:
    """For each stage, how many stages depend on it directly or not (its scheduling priority)."""
    below: dict[str, set[str]] = {stage: set() for stage in upstream}
    for stage in upstream:
        for ancestor in needed([stage], upstream) - {stage}:
            below[ancestor].add(stage)
    return {stage: len(stages) for stage, stages in below.items()}


def by_priority(ready: list[str], order: list[str], priority: dict[str, int]) -> list[str]:
    """The `ready` stages, most stages downstream first (ties in dvc.yaml's `order`)."""
    return sorted(ready, key=lambda s: (-priority[s], order.index(s)))


def default_jobs(params: dict, cores: int | None = None) -> int:
    """Stages at once that fill the cores: cores divided by the torch threads a training
    stage uses (`train.threads`; 0 means all cores). The default profile trains with one
    thread per stage, so every core runs a stage: measured on a 2-core machine, two
    single-threaded runs side by side finished in the time of one two-threaded run
    (docs/performance.md)."""
    cores = cores or os.cpu_count() or 1
    threads = int(params["train"].get("threads") or cores)
    return max(1, cores // threads)


def slots_of(stage: str, params: dict, jobs: int, cores: int | None = None) -> int:
    """How many of the `jobs` slots `stage` takes. A slot is the cores of one training
    stage (`train.threads`); the detector trains with `detector.threads` and takes the
    slots those fill, so the default's two-thread detector runs alone on 2 cores, as it
    does under `dvc repro`. Beside a one-thread classifier it took 335-365 s against
    147-169 s alone, so its three threads on two cores cost more core time than its two
    alone: the fresh default run took 715 s instead of 728 (docs/performance.md). Every
    other stage takes one slot."""
    if stage != "train_detector":
        return 1
    cores = cores or os.cpu_count() or 1
    per_slot = int(params["train"].get("threads") or cores)
    threads = int(params["detector"].get("threads") or cores)
    return max(1, min(jobs, math.ceil(threads / per_slot)))


def run_parallel(
    jobs: int,
    targets: list[str] | None = None,
    root: str | os.PathLike = ".",
    log_dir: str | os.PathLike | None = None,
    gpus: list[str] | None = None,
    params: dict | None = None,
) -> dict[str, dict]:
    """Reproduce the pipeline (or `targets` and their upstream) with up to `jobs` stages at once.

    With `params`, a stage takes the slots `slots_of` gives it, `jobs` in all; without,
    one each. With `gpus` (CUDA device ids), `jobs` is their number and each stage runs
    with CUDA_VISIBLE_DEVICES set to a GPU no other running stage holds (one run per GPU).

    Returns per stage `{"ran": bool, "seconds": float}` in finishing order. Raises
    RuntimeError naming the failed stage and its log when a stage fails (stages already
    running are let finish; nothing new starts).
    """
    if gpus:
        jobs = len(gpus)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    free_gpus = list(gpus or [])
    root = Path(root)
    log_dir = Path(log_dir) if log_dir else root / ".cache" / "parallel"
    log_dir.mkdir(parents=True, exist_ok=True)
    order, upstream = stage_graph(root)
    wanted = needed(targets, upstream) if targets else set(order)
    order = [s for s in order if s in wanted]
    upstream = {s: upstream[s] & wanted for s in order}
    priority = downstream_counts(upstream)

    # graphlib keeps the dependency bookkeeping (and rejects a cycle); the order among the
    # stages it hands out as ready is ours: most stages downstream first.
    sorter = TopologicalSorter(upstream)
    sorter.prepare()
    ready: list[str] = []
    failed: list[str] = []
    running: dict[str, tuple[subprocess.Popen, float, Path, str | None]] = {}
    results: dict[str, dict] = {}
    slots = {s: slots_of(s, params, jobs) if params and not gpus else 1 for s in order}
    while sorter.is_active():
        if not failed:
            ready.extend(sorter.get_ready())
            for stage in by_priority(ready, order, priority):
                if sum(slots[s] for s in running) + slots[stage] > jobs:
                    break  # the first in line waits for its slots; nothing overtakes it
                log = log_dir / f"{stage.replace('@', '-')}.log"
                gpu = free_gpus.pop(0) if gpus else None
                env = os.environ | ({"CUDA_VISIBLE_DEVICES": gpu} if gpus else {})
                with open(log, "w") as out:
                    process = subprocess.Popen(
                        ["dvc", "--wait-for-lock", "repro", "--single-item", stage],
                        cwd=root,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                running[stage] = (process, time.perf_counter(), log, gpu)
                ready.remove(stage)
                print(f"start  {stage}" + (f" on GPU {gpu}" if gpus else ""), flush=True)
        elif not running:
            break
        time.sleep(0.2)
        for stage, (process, started, log, gpu) in list(running.items()):
            if process.poll() is None:
                continue
            del running[stage]
            if gpu is not None:
                free_gpus.append(gpu)
            seconds = time.perf_counter() - started
            if process.returncode != 0:
                failed.append(stage)
                print(f"FAILED {stage} after {seconds:.0f} s (log: {log})", flush=True)
                continue
            ran = f"Running stage '{stage}'" in log.read_text()
            results[stage] = {"ran": ran, "seconds": round(seconds, 1)}
            sorter.done(stage)
            print(f"{'done' if ran else 'same'}   {stage} in {seconds:.0f} s", flush=True)
    if failed:
        log = log_dir / f"{failed[0].replace('@', '-')}.log"
        raise RuntimeError(f"stage {failed[0]} failed; end of {log}:\n{log.read_text()[-2000:]}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        help="stages at once (default: cores / torch threads per stage in params.yaml)",
    )
    parser.add_argument(
        "--gpus", help="comma-separated CUDA device ids: one stage per GPU (sets --jobs)"
    )
    parser.add_argument("targets", nargs="*", help="stages to reproduce (default: all)")
    args = parser.parse_args()
    gpus = args.gpus.split(",") if args.gpus else None
    params = load_params()
    jobs = len(gpus) if gpus else (args.jobs or default_jobs(params))
    started = time.perf_counter()
    try:
        results = run_parallel(jobs, args.targets or None, gpus=gpus, params=params)
    except (RuntimeError, ValueError) as error:
        sys.exit(f"repro: {error}")
    ran = sum(r["ran"] for r in results.values())
    print(
        f"repro: {ran} of {len(results)} stages ran, {jobs} at a time, "
        f"in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
