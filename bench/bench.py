"""Benchmark the data path and training on this machine; every figure is printed as a ratio.

    python bench/bench.py [--images 64] [--jpegs DIR] [--skip-paper]
                          [--repro [--against REV] [--jobs N] [--serial] [--repro-only]]
                          [--models DIR] [--predict-images 64] [--predict-only]

Measures, in one process (so that the ratios compare like with like on a shared machine):
  (a) resize: full-size CheXpert-like JPEGs (2320x2828, phantom radiographs) to 512 px,
      against one process decoding with Pillow at full size and resizing with Pillow;
      `--jpegs DIR` measures on your own JPEGs instead (e.g. a CheXpert-v1.0 copy: the
      ratio depends on how many bits a pixel the files hold);
  (b) training input: images/s a DataLoader delivers with augmentation from the image store
      (`cxrstn.data.ImageDataset`), against decoding the JPEG files every epoch, and against
      torchxrayvision's `CheX_Dataset` + `XRayResizer` on the same files (skipped with a
      note when torchxrayvision is not installed: `pip install -r bench/requirements.txt`);
  (c) classifier training images/s (forward, backward, Adam step) of the default profile
      (params.yaml) with 1 thread and with all cores, and of the paper profile
      (params.paper.yaml: full-width VGG16 at 512 px) at batch 2;
  (e) predict: images/s of `cxrstn predict` (the stn setting's fold models in --models,
      default models/) on phantom films of CheXpert-small size, with the input check
      (not_radiograph and out_of_distribution) on and off; skipped with a note when the
      models or their ood.npz are not there (run `dvc repro` first); `--predict-only`
      runs (e) alone;
  (d) with --repro: the default pipeline from fresh clones, one after the other, stage by
      stage, with wall time and peak memory (PSS summed over the stage processes alive
      at once): `dvc repro` at `--against REV` (e.g. an older commit, whose default was
      `dvc repro`), then HEAD as `make repro` runs it, `--jobs` stages at a time
      (cxrstn.parallel; `--jobs 1` is `dvc repro`); `--serial` adds HEAD's `dvc repro`.
      10-20 min per clone on 2 cores; `--repro-only` skips (a)-(c).
Without --repro it runs in a few minutes on 2 cores. Temporary files go to a temp folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrstn.data import ImageDataset, augmentation  # noqa: E402
from cxrstn.images import (  # noqa: E402
    ImageStore,
    new_store,
    read_image,
    resize_square,
    write_store,
)
from cxrstn.io import load_params  # noqa: E402
from cxrstn.models import build_model, gflops  # noqa: E402
from cxrstn.parallel import default_jobs  # noqa: E402
from cxrstn.phantom.radiograph import render_frontal  # noqa: E402
from cxrstn.sources.chexpert import COLUMNS  # noqa: E402
from cxrstn.train import adam  # noqa: E402

FULL_SIZE = (2320, 2828)  # width, height of a full-resolution CheXpert image
RENDERS = 8  # distinct phantom renders; each is written several times with fresh film grain
ROUNDS = 5  # (a) the stage and the decode floor are timed alternately this often (medians)


def line(name: str, value: float, unit: str, base: float | None = None, note: str = "") -> None:
    ratio = f"{value / base:6.2f}x" if base else "  base "
    print(f"  {name:58s} {value:9.1f} {unit:6s} {ratio}  {note}", flush=True)


def timed(function, *args, repeat: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function(*args)
    return (time.perf_counter() - started) / repeat


# (a) resize -----------------------------------------------------------------------------


def _render(seed: int) -> np.ndarray:
    film = render_frontal(np.random.default_rng(seed), *FULL_SIZE, words=["PORTABLE", "L"])
    return np.rint(np.clip(film.image, 0, 1) * 255).astype(np.uint8)


def make_jpegs(folder: Path, count: int, workers: int) -> list[Path]:
    """`count` full-size JPEGs laid out as CheXpert (`train/patientNNNNN/study1/...`).

    Rendering a 2320x2828 phantom takes seconds, so RENDERS films are drawn and each is
    saved several times, shifted by a few pixels and mirrored every other time, so that
    no two files are the same. At quality 95 a file is about 1.7 MB (2 bits a pixel, as
    the real full-size release: 439 GB for 224,316 images), and JPEG entropy is what
    decoding time depends on.
    """
    with Pool(workers) as pool:
        films = pool.map(_render, range(min(RENDERS, count)))
    files = []
    for index in range(count):
        copy, film = divmod(index, len(films))
        film = np.roll(films[film], 3 * copy, axis=0)
        if copy % 2:
            film = film[:, ::-1]
        path = folder / f"train/patient{index + 1:05d}/study1/view1_frontal.jpg"
        path.parent.mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(film)).save(path, quality=95)
        files.append(path)
    return files


def pillow_full(path: Path, size: int) -> np.ndarray:
    """The baseline: what most scripts do (Pillow's default resampling, bicubic)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize((size, size)))


def pillow_full_box(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize((size, size), Image.Resampling.BOX))


def full_area(path: Path, size: int) -> np.ndarray:
    """The resize stage before the fast decode: full decode, OpenCV area resize."""
    return resize_square(read_image(path), size)


def fast_area(path: Path, size: int) -> np.ndarray:
    """The resize stage now: DCT-scaled decode (Pillow draft), OpenCV area resize."""
    return resize_square(read_image(path, min_side=size), size)


def _fast_area_task(args: tuple[int, Path, int]) -> np.ndarray:
    _, path, size = args
    return fast_area(path, size)


def draft_decode(path: Path, size: int) -> tuple[int, int]:
    """The decode floor: libjpeg-turbo's DCT-scaled decode alone (Pillow draft mode, the
    scale `read_image` picks), no conversion, no resize. Returns the decoded size."""
    with Image.open(path) as image:
        image.draft("L", (size, size))
        image.load()
        return image.size


def _draft_task(args: tuple[int, Path, int]) -> tuple[int, int]:
    _, path, size = args
    return draft_decode(path, size)


_RESIZE_INTO = None


def _stage_task(args: tuple[int, Path, int]):
    """One image as the resize stage does it: stages/resize.py's own `resize_into`
    (decode, resize into row `row` of the store's memory map, the file's XXH3 for
    data/originals.csv)."""
    global _RESIZE_INTO
    if _RESIZE_INTO is None:
        _RESIZE_INTO = runpy.run_path(str(ROOT / "stages" / "resize.py"))["resize_into"]
    row, path, size = args
    return _RESIZE_INTO((row, path), size)


def pool_rate(pool, workers: int, task, files: list[Path], size: int) -> float:
    """Images/s of `task` over `files` in a started pool of `workers` processes (each
    warmed up on one image first); a task gets (row, file, size)."""
    pool.map(task, [(0, files[0], size)] * workers, chunksize=1)
    started = time.perf_counter()
    pool.map(task, [(row, p, size) for row, p in enumerate(files)], chunksize=2)
    return len(files) / (time.perf_counter() - started)


def own_jpegs(folder: str, count: int) -> list[Path]:
    """The first `count` JPEGs under `folder` (sorted paths), for (a) on real files."""
    files = sorted(Path(folder).rglob("*.jp*g"))[:count]
    if not files:
        raise SystemExit(f"--jpegs {folder}: no .jpg or .jpeg file below it")
    return files


def describe(files: list[Path]) -> str:
    """Mean width x height and megabytes of `files` (headers only)."""
    sizes = np.array([Image.open(path).size for path in files])
    megabytes = np.mean([path.stat().st_size for path in files]) / 1e6
    bits = 8e6 * megabytes / sizes.prod(axis=1).mean()
    width, height = sizes.mean(axis=0).round().astype(int)
    return f"{width}x{height} on average, {megabytes:.2f} MB ({bits:.1f} bits a pixel)"


def bench_resize(files: list[Path], size: int, workers: int) -> dict:
    print(f"(a) resize {len(files)} JPEGs of {describe(files)} to {size} px")
    rate = {}
    for name, function in [
        ("Pillow full decode + Pillow resize (bicubic), 1 process", pillow_full),
        ("Pillow full decode + Pillow resize (box), 1 process", pillow_full_box),
        ("full decode + OpenCV area (resize stage before), 1 process", full_area),
        ("draft decode + OpenCV area (resize stage now), 1 process", fast_area),
    ]:
        seconds = timed(lambda f=function: [f(p, size) for p in files])
        rate[name] = len(files) / seconds
    keys = [str(path) for path in files]
    with (
        tempfile.TemporaryDirectory(prefix="cxrstn-bench-store-") as tmp,
        new_store(Path(tmp) / "store", keys, size) as store,
        store.pool(workers) as pool,  # started first: the stage amortises it over every image
    ):
        rate[f"draft decode + OpenCV area, {workers} processes"] = pool_rate(
            pool, workers, _fast_area_task, files, size
        )
        # The stage against the floor, alternated ROUNDS times, medians: one pass over the
        # files takes about a second, and a passing load shifts a single pass by +-3 %.
        passes = [
            (
                pool_rate(pool, workers, _stage_task, files, size),
                pool_rate(pool, workers, _draft_task, files, size),
            )
            for _ in range(ROUNDS)
        ]
        stage, floor = np.median(passes, axis=0)
    rate[f"the resize stage (into the store, + XXH3), {workers} processes"] = stage
    base = next(iter(rate.values()))
    for name, value in rate.items():
        line(name, value, "img/s", None if value == base else base)
    per_core = len(files) / timed(lambda: [draft_decode(p, size) for p in files])
    line("decode floor: draft decode alone, 1 process", per_core, "img/s", base)
    line(f"decode floor: draft decode alone, {workers} processes", floor, "img/s", base)
    print(
        f"  the resize stage reaches {stage / floor:.0%} of the decode floor on {workers} "
        f"cores (target: at least 90 %; medians of {ROUNDS} alternated passes, each pass's "
        f"ratio {min(a / b for a, b in passes):.0%}-{max(a / b for a, b in passes):.0%}), "
        f"{stage / per_core / workers:.0%} of {workers} x the one-core floor"
    )
    differences = [
        np.abs(full_area(p, size).astype(int) - fast_area(p, size).astype(int)) for p in files[:8]
    ]
    stacked = np.stack(differences)
    print(
        f"  stored images, draft vs full decode (8 images): mean abs difference "
        f"{stacked.mean():.2f}, 99th percentile {np.percentile(stacked, 99):.0f}, "
        f"max {stacked.max()} gray levels"
    )
    return rate


# (b) training input ---------------------------------------------------------------------


class DecodingDataset(torch.utils.data.Dataset):
    """ImageDataset's items, but each image decoded from its JPEG file every time."""

    def __init__(self, files, size, transform):
        self.files, self.size, self.transform = files, size, transform
        self.labels = np.zeros(len(files), dtype=np.int64)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        pixels = torch.from_numpy(fast_area(self.files[index], self.size)).unsqueeze(0)
        image = self.transform(pixels.float().div_(255.0))
        return image, torch.tensor(0.0), index


def loader_rate(dataset, batch_size: int, workers: int, epochs: int = 1) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, shuffle=True
    )
    started, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            seen += len(batch["img"] if isinstance(batch, dict) else batch[0])
    return seen / (time.perf_counter() - started)


def bench_loader(folder: Path, files: list[Path], size: int, params: dict, workers: int) -> dict:
    classifier = params["classifier"]
    transform = augmentation(classifier["rotation"], classifier["shear"])
    batch = classifier["batch_size"]
    keys = [str(p.relative_to(folder)) for p in files]
    write_store(folder / "store", keys, (fast_area(p, size) for p in files), size)
    store = ImageStore(folder / "store")
    print(f"(b) training input at {size} px with augmentation, batch {batch}, {workers} workers")
    rate = {}
    repeated = keys * 8  # enough images per epoch that worker start-up does not dominate
    rate["image store (memmap) + ImageDataset, augmented at the stored size"] = loader_rate(
        ImageDataset(store, repeated, [0] * len(repeated), transform), batch, workers, epochs=2
    )
    side = classifier["sample_size"]
    if side:  # what the default runs get: shrunk to the source copy, then augmented
        rate[f"the same, shrunk to {side} px first (every setting's runs)"] = loader_rate(
            ImageDataset(store, repeated, [0] * len(repeated), transform, side),
            batch,
            workers,
            epochs=2,
        )
    rate["decode the JPEG files every epoch (draft decode)"] = loader_rate(
        DecodingDataset(files, size, transform), batch, workers
    )
    try:
        import torchvision
        import torchxrayvision as xrv
    except ImportError:
        print("  torchxrayvision not installed: pip install -r bench/requirements.txt")
    else:
        csv = folder / "train.csv"
        rows = [
            {c: "" for c in COLUMNS}
            | {"Path": f"CheXpert-v1.0/{k}", "Frontal/Lateral": "Frontal", "AP/PA": "PA"}
            | {"No Finding": 1.0, "Sex": "Female", "Age": 50}
            for k in keys
        ]
        pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, index=False)
        xrv_aug = torchvision.transforms.Compose(  # as in torchxrayvision's README
            [
                xrv.datasets.ToPILImage(),
                torchvision.transforms.RandomAffine(
                    classifier["rotation"], shear=classifier["shear"]
                ),
                torchvision.transforms.ToTensor(),
            ]
        )
        for engine in ("skimage", "cv2"):
            dataset = xrv.datasets.CheX_Dataset(
                imgpath=str(folder),
                csvpath=str(csv),
                transform=xrv.datasets.XRayResizer(size, engine=engine),
                data_aug=xrv_aug,
                unique_patients=False,
            )
            name = f"torchxrayvision CheX_Dataset + XRayResizer({engine})"
            rate[name] = loader_rate(dataset, batch, workers)
    base = next(iter(rate.values()))
    for name, value in rate.items():
        line(name, value, "img/s", None if value == base else base)
    return rate


# (c) classifier training ----------------------------------------------------------------


def train_rate(
    params: dict, batch: int, steps: int, threads: int, fast: bool = True
) -> tuple[float, float]:
    """Training images/s of the baseline classifier on random stored-size images, and its
    GFLOPs per image (forward). `fast` trains as the pipeline does (channels_last, fused
    Adam); without, in the default layout with the per-tensor Adam."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = params["resize"]["size"]
    model = build_model("baseline", params["classifier"], None)
    images = torch.rand(batch, 1, size, size)
    if fast:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        optimizer = adam([{"params": model.parameters(), "lr": 1e-5}], torch.device("cpu"))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, foreach=False)
    labels = torch.randint(0, 2, (batch,)).float()

    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    seconds = timed(step, repeat=steps)
    side = params["classifier"]["input_size"]
    return batch / seconds, gflops(model, torch.zeros(1, 1, side, side))


def bench_training(default: dict, paper: dict | None, loader: float, steps: int) -> dict:
    cores = os.cpu_count()
    batch = default["classifier"]["batch_size"]
    print(f"(c) classifier training (forward, backward, Adam step), {steps} steps after a warm-up")
    one, flops = train_rate(default, batch, steps, 1)
    many, _ = train_rate(default, batch, steps, cores)
    plain, _ = train_rate(default, batch, steps, cores, fast=False)
    line(f"default profile ({flops:.3f} GFLOP/img fwd), batch {batch}, 1 thread", one, "img/s")
    line(f"default profile, {cores} threads", many, "img/s", one)
    line(f"  the same, NCHW layout and per-tensor Adam, {cores} threads", plain, "img/s", one)
    print(f"  channels_last and fused Adam (the pipeline): {many / plain:.2f}x")
    print(
        f"  loader headroom: the loader of (b) delivers {loader / max(one, many):.1f}x what the "
        "fastest training uses (the slowest of the default runs' input paths)"
    )
    rate = {"default_1_thread": one, f"default_{cores}_threads": many}
    if paper is not None:
        paper_rate, paper_flops = train_rate(paper, 2, max(1, steps // 20), cores)
        line(
            f"paper profile ({paper_flops:.1f} GFLOP/img fwd), batch 2, {cores} threads",
            paper_rate,
            "img/s",
            one,
        )
        rate["paper"] = paper_rate
    return rate


# (d) the whole pipeline -------------------------------------------------------------------


def bench_predict(models_dir: Path, count: int, rounds: int = 5) -> dict:
    """(e) `cxrstn predict`'s images/s with the input check off and on: `count` phantom
    films (390 x 320 JPEGs, as CheXpert-small) scored by the stn fold models of
    `models_dir`, each way `rounds` times alternately (medians), on one thread: an image
    at a time is too little work to share, and a second thread on a busy 2-core machine
    waits more than it computes."""
    from cxrstn.device import choose_device
    from cxrstn.nonradiographs import film
    from cxrstn.predict import load_ensemble, predict_files

    device = choose_device("auto")
    try:
        checked = load_ensemble(models_dir, "stn", None, device)
    except (FileNotFoundError, ValueError) as error:
        print(f"  (e) predict: skipped, {error}")
        return {}
    unchecked = dataclasses.replace(checked, stats=None)
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="cxrstn-bench-predict-") as tmp:
        folder = Path(tmp)
        for index in range(count):
            image = np.roll(film(index % RENDERS, 320, 390), index, axis=0)
            Image.fromarray(image).save(folder / f"{index}.jpg", quality=95)
        torch.set_num_threads(1)
        try:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # no bars
                for _ in range(rounds):
                    for name, ensemble in (("off", unchecked), ("on", checked)):
                        times[name].append(timed(predict_files, [str(folder)], ensemble, device))
        finally:
            torch.set_num_threads(threads)
    models = f"{len(checked.folds)} stn fold models, {device}, 1 thread"
    rates = {
        f"predict, input check {name} ({models})": count / float(np.median(seconds))
        for name, seconds in times.items()
    }
    base = None
    for name, rate in rates.items():
        line(name, rate, "img/s", base)
        base = base or rate
    return rates


def _tree_memory(pid: int) -> int:
    """Bytes of memory the process tree holds: the sum of its processes' PSS (proportional
    set size: a page shared by k processes counts 1/k in each). Summing RSS instead counts
    shared pages (torch's libraries, a forked worker's copy-on-write parent pages) once
    per process and overstates the total."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().pss
    return total


def run_measured(command: list[str], cwd: Path, env: dict, on_line=None) -> tuple[float, float]:
    """Wall seconds and peak memory (GB, summed PSS) of the process tree of `command`; each output
    line is echoed and passed to `on_line` as it comes."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = [0]

    def watch():
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_memory(process.pid))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    tail = []
    for text in process.stdout:
        print(f"    {text}", end="", flush=True)
        tail = [*tail[-40:], text]
        if on_line is not None:
            on_line(text)
    process.wait()
    watcher.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{''.join(tail)}")
    return time.perf_counter() - started, peak[0] / 1e9


def fresh_clone(rev: str, dest: Path) -> dict:
    """A clone of this repository at `rev` (committed files only) and the environment its
    stages run in: its own code first on the path, its own DVC and tool folders."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", rev], check=True)
    return os.environ | {
        "PYTHONPATH": str(dest),
        "DVC_SITE_CACHE_DIR": str(dest / ".cache/dvc"),
        "DVC_GLOBAL_CONFIG_DIR": str(dest / ".cache/dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "MPLCONFIGDIR": str(dest / ".cache/matplotlib"),
        "YOLO_CONFIG_DIR": str(dest / ".cache/ultralytics"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def time_dvc_repro(rev: str, dest: Path) -> dict:
    """`dvc repro` in a fresh clone of `rev`: seconds per stage (from the moment DVC starts
    it to the next one), the whole wall time and the peak memory."""
    env = fresh_clone(rev, dest)
    stages, current = {}, [None, time.perf_counter()]

    def on_line(text: str) -> None:
        if text.startswith("Running stage '"):
            now = time.perf_counter()
            if current[0]:
                stages[current[0]] = now - current[1]
            current[:] = [text.split("'")[1], now]

    seconds, peak = run_measured(["dvc", "repro"], dest, env, on_line)
    if current[0]:
        stages[current[0]] = time.perf_counter() - current[1]
    return {"stages": stages, "seconds": seconds, "peak_gb": peak}


def time_parallel(rev: str, dest: Path, jobs: int) -> dict:
    """`python -m cxrstn.parallel --jobs N` in a fresh clone of `rev`: the same figures."""
    env = fresh_clone(rev, dest)
    stages = {}

    def on_line(text: str) -> None:
        parts = text.split()
        if parts and parts[0] in ("done", "same"):
            stages[parts[1]] = float(parts[3])

    command = [sys.executable, "-m", "cxrstn.parallel", "--jobs", str(jobs)]
    seconds, peak = run_measured(command, dest, env, on_line)
    return {"stages": stages, "seconds": seconds, "peak_gb": peak}


def bench_repro(
    against: str | None, jobs: int, keep: str | None = None, serial: bool = False
) -> None:
    """(d): the default pipeline from fresh clones, one after the other on this machine;
    the clones stay in `keep` if given (to inspect or reuse their outputs)."""
    runs = {}
    # HEAD as it is now: the runs take half an hour, and a commit meanwhile must not change
    # what the later clones measure
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"(d) HEAD is {head[:12]}", flush=True)
    if keep:
        Path(keep).mkdir(parents=True)
    folder = contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory()
    with folder as tmp:
        if against:
            print(f"(d) dvc repro in a fresh clone of {against}", flush=True)
            runs[f"{against} dvc repro"] = time_dvc_repro(against, Path(tmp) / "against")
        if serial or jobs == 1:
            print("(d) dvc repro in a fresh clone of HEAD", flush=True)
            runs["HEAD dvc repro"] = time_dvc_repro(head, Path(tmp) / "head")
        if jobs > 1:
            print(f"(d) make repro: {jobs} stages at a time, fresh clone of HEAD", flush=True)
            runs[f"HEAD {jobs} at a time"] = time_parallel(head, Path(tmp) / "parallel", jobs)
    names = list(runs)
    stages = list(dict.fromkeys(s for run in runs.values() for s in run["stages"]))
    print("(d) the default pipeline from a fresh clone, seconds per stage")
    print(f"  {'stage':24s}" + "".join(f"{name:>22s}" for name in names))
    for stage in stages:
        cells = [runs[name]["stages"].get(stage) for name in names]
        print(f"  {stage:24s}" + "".join(f"{c:22.0f}" if c else f"{'-':>22s}" for c in cells))
    print(f"  {'whole pipeline':24s}" + "".join(f"{runs[n]['seconds']:22.0f}" for n in names))
    print(f"  {'peak memory (GB)':24s}" + "".join(f"{runs[n]['peak_gb']:22.2f}" for n in names))
    base = runs[names[0]]["seconds"]
    for name in names[1:]:
        print(f"  {name} is {base / runs[name]['seconds']:.2f}x as fast as {names[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="full-size JPEGs to generate")
    parser.add_argument("--jpegs", metavar="DIR", help="(a) on the first --images JPEGs below DIR")
    parser.add_argument("--size", type=int, default=512, help="stored image side")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes")
    parser.add_argument("--steps", type=int, default=20, help="training steps to time")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper profile")
    parser.add_argument("--repro", action="store_true", help="also time the whole pipeline")
    parser.add_argument(
        "--against", metavar="REV", help="(d) also time `dvc repro` at this git revision first"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(load_params(ROOT / "params.yaml")),
        help="(d) stages at once for HEAD (default: as make repro chooses); 1: dvc repro",
    )
    parser.add_argument("--repro-only", action="store_true", help="run (d) only")
    parser.add_argument("--serial", action="store_true", help="(d) also time HEAD's dvc repro")
    parser.add_argument("--keep", metavar="DIR", help="(d) keep the clones in DIR (new folder)")
    parser.add_argument("--models", default=str(ROOT / "models"), help="(e) the trained models")
    parser.add_argument("--predict-images", type=int, default=64, help="(e) films to score")
    parser.add_argument("--predict-only", action="store_true", help="run (e) only")
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at start (ratios are measured in one process)"
    )
    if args.repro_only:
        bench_repro(args.against, args.jobs, args.keep, args.serial)
        return
    if args.predict_only:
        bench_predict(Path(args.models), args.predict_images)
        return
    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = None
    if not args.skip_paper:
        paper = yaml.safe_load((ROOT / "params.yaml").read_text())  # a fresh copy
        for section, values in yaml.safe_load((ROOT / "params.paper.yaml").read_text()).items():
            if isinstance(values, dict):
                paper.setdefault(section, {}).update(values)
    with tempfile.TemporaryDirectory(prefix="cxrstn-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = make_jpegs(folder, args.images, args.workers)
        megabytes = sum(f.stat().st_size for f in files) / len(files) / 1e6
        print(
            f"generated {len(files)} JPEGs ({megabytes:.1f} MB each on average) "
            f"in {time.perf_counter() - started:.0f} s"
        )
        own = own_jpegs(args.jpegs, args.images) if args.jpegs else files
        bench_resize(own, args.size, args.workers)
        loader = bench_loader(folder, files, args.size, default, default["train"]["workers"])
    as_used = [rate for name, rate in loader.items() if "shrunk" in name]
    bench_training(default, paper, min(as_used or loader.values()), args.steps)
    bench_predict(Path(args.models), args.predict_images)
    if args.repro:
        bench_repro(args.against, args.jobs, args.keep, args.serial)


if __name__ == "__main__":
    main()
