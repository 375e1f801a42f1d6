"""Does the pipeline write the same bytes on an AVX2 and an AVX-512 CPU, and what do the
SIMD holds cost?

    python bench/simd.py [--rev REV] [--jobs N] [--keep DIR]

On one machine, runs the data stages (phantom to crop), the detector (train_detector) and
fold 0 of each setting's training stage (the settings the params train: `train_<setting>@0`)
three ways, each in its own copy of the code (this working tree, or the committed files of
`--rev`), every stage computed afresh in each way:

  held    as a stage runs: `cxrstn.runtime.configure_tools` sets the SIMD holds
          (`SIMD_HOLD`: numpy at its AVX2 kernels, ATEN_CPU_CAPABILITY=avx2,
          ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=AVX2);
  avx2    an AVX2 machine, emulated: the same holds (a stage sets them there too), and every
          library told that the CPU has no AVX-512: numpy's dispatch, ATen and oneDNN at
          AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2, OPENCV_CPU_DISABLE=AVX512F,AVX512-SKX,...,
          OPENBLAS_CORETYPE=Haswell;
  native  the holds lifted (CXRSTN_SIMD=native): each library picks its own kernels.

First it prints the instruction set each library computes with in each way (numpy's
dispatch, torch's ATen, oneDNN's ISA and MKL's reproducibility mode from their verbose
lines, OpenCV's AVX-512 levels, every loaded OpenBLAS's core type), and stops if the
emulated AVX2 machine still runs AVX-512 anywhere (MKL says only its mode: on an AMD CPU it
reports AUTO for MKL_CBWR=AVX2, which it honours on Intel CPUs only).

It prints the md5 of each output that must not change between CPUs (the data stages'
outputs, models/detector.pt, each training stage's model.pt and predictions.csv; not the
metrics and reports, which hold timings) under each way, and the seconds each stage took;
it exits 1 when held and avx2 differ in any of them. On an AVX-512 CPU, held == avx2 says
that a stage writes the same bytes on an AVX2 CPU; native shows what the holds prevent,
and native against held seconds what they cost. On an AVX2-only CPU the three are one run.

The stages run as `make repro` runs them, `--jobs` at once (default: cores / train.threads)
across the three ways, each way's in dependency order, the same stage of the three ways
side by side where it can: a stage's seconds include sharing the cores with the stage
beside it, alike for the three ways on average; `--jobs 1` times each stage alone. The
ways' outputs (ood.npz beside each model.pt is shown, not compared) are hashed as each
stage ends. About 25 minutes on 2 cores at --jobs 2 (four settings).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrstn.io import load_params  # noqa: E402
from cxrstn.parallel import default_jobs, needed  # noqa: E402
from cxrstn.runtime import NUMPY_AVX2_PIN, SIMD_HOLD  # noqa: E402

OPENCV_AVX512 = "AVX512F,AVX512-COMMON,AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL"
"""OpenCV's names of its AVX-512 levels (`cv2.getCPUFeaturesLine()`; OpenCV warns of and
ignores a name it does not know, such as AVX512_SKX)."""
AVX2_MACHINE = {
    "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX2_PIN,
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENCV_CPU_DISABLE": OPENCV_AVX512,
    "OPENBLAS_CORETYPE": "Haswell",
}
"""What makes each library on an AVX-512 CPU run as on an AVX2 one (the stage adds its
holds on top, as it does on an AVX2 machine)."""
WAYS = {"held": {}, "avx2": AVX2_MACHINE, "native": {"CXRSTN_SIMD": "native"}}
CLEARED = {*SIMD_HOLD, *AVX2_MACHINE, "CXRSTN_SIMD"} | {
    # each copy keeps its tools' files in its own .cache/ (configure_tools' defaults)
    "MPLCONFIGDIR",
    "YOLO_CONFIG_DIR",
    "TORCH_HOME",
    "PYTHONPATH",
}
"""Variables a caller's shell may hold that would blur the comparison or share files."""
DATA_OUTPUTS = {
    "phantom": ["data/phantom"],
    "binarize": ["data/labels.csv"],
    "resize": ["data/resized", "data/originals.csv"],
    "split": ["data/folds.csv"],
    "thorax_boxes": ["data/thorax"],
    "train_detector": ["models/detector.pt"],
    "crop": ["data/crops", "data/crops.csv"],
}
SHOWN_ONLY = "ood.npz"
"""Shown in the table, not compared: the input check's statistics (a Ledoit-Wolf covariance
computed by numpy's OpenBLAS, which no hold covers), not used by any score."""
IGNORED = (".cache", ".partial")
"""File name endings DVC ignores in an output (.dvcignore): ultralytics' label caches in
data/thorax, interrupted writes."""


PROBE = """
import json, os
from cxrstn.runtime import configure_tools
configure_tools()
import cv2, numpy, scipy.linalg, sklearn.covariance, torch
from numpy._core._multiarray_umath import __cpu_features__
from threadpoolctl import threadpool_info
torch.set_num_threads(1)
conv = torch.nn.Conv2d(8, 16, 3).to(memory_format=torch.channels_last)
conv(torch.randn(2, 8, 40, 40).to(memory_format=torch.channels_last)).sum().backward()
torch.randn(64, 64) @ torch.randn(64, 64)
numpy_512 = [f for f in ("X86_V4", "AVX512_ICL", "AVX512_SPR") if __cpu_features__.get(f)]
opencv_512 = [f for f in cv2.getCPUFeaturesLine().split() if "AVX512" in f and "?" not in f]
blas = sorted({i["architecture"] for i in threadpool_info() if i["internal_api"] == "openblas"})
print("PROBE " + json.dumps({
    "numpy": " ".join(numpy_512) or "AVX2",
    "ATen": torch.backends.cpu.get_cpu_capability(),
    "OpenCV": " ".join(f.strip("*") for f in opencv_512) or "AVX2",
    "OpenBLAS": " ".join(blas),
}))
"""
"""Run in a way's environment: the instruction set each library computes with. oneDNN's and
MKL's are read from their verbose lines (ONEDNN_VERBOSE, MKL_VERBOSE)."""
AVX512_NAMES = ("AVX512", "AVX-512", "X86_V4", "SkylakeX", "Cooperlake", "SapphireRapids")


def probe(way: str, dest: Path) -> dict[str, str]:
    """What each library runs with in `way` ({library: instruction set})."""
    env = way_env(way, dest) | {"ONEDNN_VERBOSE": "1", "MKL_VERBOSE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=dest, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"bench/simd.py: the {way} probe failed: {done.stderr.strip()[-500:]}")
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("PROBE "):
            found |= json.loads(line[6:])
        elif line.startswith("onednn_verbose") and ",isa:" in line:
            found["oneDNN"] = line.split(",isa:")[1]
        elif line.startswith("MKL_VERBOSE") and "CNR:" in line:
            found["MKL"] = "CNR " + line.split("CNR:")[1].split()[0]
    return found


def check_emulation(found: dict[str, dict[str, str]]) -> list[str]:
    """Print what each library runs with in each way; the libraries that still use AVX-512
    on the emulated AVX2 machine (MKL says only its reproducibility mode, not checked)."""
    libraries = ["numpy", "ATen", "oneDNN", "MKL", "OpenCV", "OpenBLAS"]
    print(f"\n| library | {' | '.join(found)} |")
    print("|---" * (len(found) + 1) + "|")
    for library in libraries:
        print(f"| {library} | {' | '.join(found[w].get(library, '?') for w in found)} |")
    emulated = found.get("avx2", {})
    return [
        lib
        for lib, isa in emulated.items()
        if lib != "MKL" and any(name in isa for name in AVX512_NAMES)
    ]


def trained_settings(plan: dict[str, tuple[str, set[str]]]) -> list[str]:
    """The settings whose fold-0 training stage the pipeline has (stn_eq only where
    split.stn_eq_fold_ids lists folds), in the pipeline's order."""
    fold0 = [s for s in plan if s.startswith("train_") and s.endswith("@0")]
    return [s.removeprefix("train_").removesuffix("@0") for s in fold0]


def outputs(settings: list[str]) -> dict[str, list[str]]:
    """The outputs to compare, by the stage that writes them."""
    found = dict(DATA_OUTPUTS)
    for setting in settings:
        run, model = f"reports/runs/{setting}/fold0", f"models/{setting}/fold0"
        found[f"train_{setting}@0"] = [
            f"{model}/model.pt",
            f"{run}/predictions.csv",
            f"{model}/{SHOWN_ONLY}",
        ]
    return found


def md5(path: Path) -> str:
    """md5 of a file, or of a folder's relative paths and file contents in sorted order
    (files DVC ignores left out); "missing" when there is none."""
    if not path.exists():
        return "missing"
    digest = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file.name.endswith(IGNORED):
            continue
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def copy_tree(dest: Path, rev: str | None = None) -> None:
    """The code and parameters of this working tree (or of commit `rev`), without data,
    models or reports."""
    dest.mkdir(parents=True)
    if rev:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        for name in ("data", "models", "reports"):
            shutil.rmtree(dest / name, ignore_errors=True)
        return
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        if name.split("/")[0] in ("data", "models", "reports") or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def pipeline(root: Path) -> dict[str, tuple[str, set[str]]]:
    """Each stage of root's dvc.yaml: its command and the stages it depends on (as DVC
    resolves them; root need not be a git repository)."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".", config={"core": {"no_scm": True}}) as repo:
        graph = repo.index.graph
        return {
            s.addressing: (s.cmd, {d.addressing for d in graph.successors(s)})
            for s in repo.index.stages
            if s in graph
        }


def way_env(way: str, dest: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a stage of `way` runs in, in the copy `dest`."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if k not in CLEARED}
    path = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return env | WAYS[way] | {"PYTHONPATH": str(dest), "PATH": path}


class TaskFailed(RuntimeError):
    def __init__(self, task, code: int):
        super().__init__(f"{task} failed (exit code {code})")
        self.task = task


def schedule(
    upstream: dict, jobs: int, start: Callable, finished: Callable, order: Callable
) -> dict:
    """Run every task once the tasks it depends on (`upstream[task]`) are done, at most
    `jobs` at once, ready tasks in `order`'s order. `start(task)` returns a Popen;
    `finished(task)` runs when a task ended well, before any task that depends on it
    starts. Returns each task's wall seconds. On a failure, the running tasks are let
    finish, nothing new starts, and TaskFailed names the first failed task."""
    pending, running, seconds, failed = set(upstream), {}, {}, None
    while (pending and failed is None) or running:
        ready = sorted((t for t in pending if upstream[t] <= seconds.keys()), key=order)
        while failed is None and ready and len(running) < jobs:
            task = ready.pop(0)
            pending.discard(task)
            running[task] = (start(task), time.perf_counter())
        if not running and failed is None:
            raise ValueError(f"tasks wait on tasks that never run: {sorted(pending)}")
        time.sleep(0.2)
        for task, (process, began) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[task]
            if code != 0:
                failed = failed or TaskFailed(task, code)
                continue
            seconds[task] = time.perf_counter() - began
            finished(task)
    if failed:
        raise failed
    return seconds


def downstream(graph: dict[str, set[str]]) -> dict[str, int]:
    """How many stages depend on each stage, directly or not (`graph`: stage -> upstream)."""
    below = {stage: set() for stage in graph}
    for stage in graph:
        todo = list(graph[stage])
        while todo:
            up = todo.pop()
            if stage not in below[up]:
                below[up].add(stage)
                todo.extend(graph[up])
    return {stage: len(stages) for stage, stages in below.items()}


def compare(
    copies: dict[str, Path], plan: dict[str, tuple[str, set[str]]], wanted: dict, jobs: int
) -> tuple[dict, dict]:
    """Run the `wanted` stages (and what they depend on) of `plan` in each way's copy;
    ({way: {output: md5}}, {way: {stage: seconds}}). A stage's log is
    `<copy>/.cache/simd/<stage>.log`."""
    stages = needed(list(wanted), {s: up for s, (_, up) in plan.items()})
    graph = {s: plan[s][1] & stages for s in stages}
    tasks = {(w, s): {(w, u) for u in graph[s]} for w in copies for s in stages}
    below = downstream(graph)
    ways, in_plan = list(copies), list(plan)
    hashes = {way: {} for way in copies}

    def start(task):
        way, stage = task
        log = copies[way] / ".cache" / "simd" / f"{stage}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"  {way}: {stage}", flush=True)
        with open(log, "w") as out:
            return subprocess.Popen(
                plan[stage][0],
                shell=True,
                cwd=copies[way],
                env=way_env(way, copies[way]),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def finished(task):
        way, stage = task
        for output in wanted.get(stage, []):
            hashes[way][output] = md5(copies[way] / output)

    def order(task):
        way, stage = task
        return (-below[stage], in_plan.index(stage), ways.index(way))

    try:
        seconds = schedule(tasks, jobs, start, finished, order)
    except TaskFailed as error:
        way, stage = error.task
        log = copies[way] / ".cache" / "simd" / f"{stage}.log"
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"{error}; the end of {log}:\n{tail}") from None
    by_way = {way: {s: seconds[(way, s)] for s in in_plan if (way, s) in seconds} for way in ways}
    return hashes, by_way


def report(hashes: dict, seconds: dict) -> list[str]:
    """Print the md5 table and the seconds; the outputs where held and avx2 differ."""
    ways = list(hashes)
    held, avx2 = ways[0], ways[1]
    differ = []
    print(f"\n| output | {' | '.join(ways)} | {held} == {avx2} |")
    print("|---" * (len(ways) + 2) + "|")
    for output, digest in hashes[held].items():
        cells = [hashes[w].get(output, "missing")[:10] for w in ways]
        if output.endswith(SHOWN_ONLY):
            same = "(shown, not compared)"
        elif digest == hashes[avx2].get(output) and digest != "missing":
            same = "yes"
        else:
            same, differ = "NO", [*differ, output]
        print(f"| {output} | {' | '.join(cells)} | {same} |")
    native = ways[-1]
    print(f"\n| seconds | {' | '.join(ways)} | {native} / {held} |")
    print("|---" * (len(ways) + 2) + "|")
    for stage in seconds[held]:
        cells = [f"{seconds[w].get(stage, float('nan')):.1f}" for w in ways]
        ratio = seconds[native].get(stage, float("nan")) / seconds[held][stage]
        print(f"| {stage} | {' | '.join(cells)} | {ratio:.2f} |")
    totals = [sum(seconds[w].values()) for w in ways]
    cells = " | ".join(f"{t:.0f}" for t in totals)
    print(f"| all stages | {cells} | {totals[-1] / totals[0]:.2f} |")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="run the committed files of REV, not the working tree")
    parser.add_argument("--jobs", type=int, help="stages at once (default: as make repro)")
    parser.add_argument("--keep", metavar="DIR", help="keep the three copies in DIR (new folder)")
    args = parser.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True)
    folder = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()
    with folder as tmp:
        copies = {way: Path(tmp) / way for way in WAYS}
        for dest in copies.values():
            copy_tree(dest, args.rev)
        first = copies["held"]
        plan = pipeline(first)
        settings = trained_settings(plan)
        jobs = args.jobs or default_jobs(load_params(first / "params.yaml"))
        code = args.rev or "the working tree"
        print(f"{code}: settings {settings}, {jobs} stages at once", flush=True)
        leaks = check_emulation({way: probe(way, dest) for way, dest in copies.items()})
        if leaks:
            sys.exit(f"the emulated AVX2 machine still runs AVX-512 in {leaks}: fix AVX2_MACHINE")
        started = time.perf_counter()
        hashes, seconds = compare(copies, plan, outputs(settings), jobs)
        print(f"\n{(time.perf_counter() - started) / 60:.1f} min")
        differ = report(hashes, seconds)
    sys.exit(f"differ between held and avx2: {differ}" if differ else 0)


if __name__ == "__main__":
    main()
