"""Faults users meet on shared machines: two writers of one output, two `dvc repro` in one
workspace, a full disk, hostile or huge input files, and thousands of images to score."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from test_predict import dicom, make_models, radiograph, run_predict
from test_stages import make_chexpert, project, stage

from cxrstn.images import ImageStore, read_image
from cxrstn.io import DiskFullError, atomic_path, write_csv
from cxrstn.predict import errors_path

ROOT = Path(__file__).resolve().parents[1]


# ---- two writers of one file ----------------------------------------------------------------


def test_two_writers_of_one_file_never_mix(tmp_path):
    """Writer A is half way through when writer B writes the same output whole: A's file
    must still be whole when it lands, and no temporary file may remain."""
    out = tmp_path / "worklist.csv"
    first = pd.DataFrame({"path": [f"a{i}.png" for i in range(2000)], "score": 0.25})
    second = pd.DataFrame({"path": [f"b{i}.png" for i in range(500)], "score": 0.75})
    text = first.to_csv(index=False, lineterminator="\n")
    with atomic_path(out, concurrent=True) as tmp, open(tmp, "w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        write_csv(out, second, concurrent=True)  # another `cxrstn predict --out` finishes
        assert pd.read_csv(out).equals(second)
        f.write(text[len(text) // 2 :])
    assert pd.read_csv(out).equals(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worklist.csv"]


def test_a_dead_writers_temporary_file_is_removed_by_the_next(tmp_path):
    out = tmp_path / "worklist.csv"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / f"worklist.csv.{ended.pid}-0badc0de.partial"
    running = tmp_path / f"worklist.csv.{os.getppid()}-0badc0de.partial"  # still writing
    dead.write_text("path,score\nhalf")
    running.write_text("path,score\nhalf")
    write_csv(out, pd.DataFrame({"path": ["x.png"], "score": [0.5]}), concurrent=True)
    assert not dead.exists() and running.exists()


@pytest.mark.slow
def test_two_predict_runs_writing_one_worklist_leave_a_whole_one(tmp_path):
    models = make_models(tmp_path, folds=1)
    films = tmp_path / "films"
    films.mkdir()
    for k in range(150):
        Image.fromarray(radiograph(k)).save(films / f"film{k:03d}.png")
    out = tmp_path / "worklist.csv"
    command = [sys.executable, "-m", "cxrstn.cli", "predict", str(films), "--out", str(out)]
    command += ["--models", str(models), "--device", "cpu", "--setting", "baseline"]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    runs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE))
    for run in runs:
        run.wait()
        assert run.returncode == 0, run.stdout.read().decode()[-2000:]
    worklist = pd.read_csv(out)
    assert len(worklist) == 150 and worklist["path"].is_unique
    assert list(worklist["rank"]) == list(range(1, 151))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["films", "models", "worklist.csv", "worklist.errors.csv"]
    )


# ---- two `dvc repro` in one workspace -------------------------------------------------------


def tiny_dvc_project(tmp_path: Path) -> tuple[Path, dict]:
    """A git + DVC copy of the project with test_pipeline's tiny parameters."""
    from test_pipeline import SKIP, TINY, deep_update

    dest = tmp_path / "project"
    dest.mkdir()
    for item in ROOT.iterdir():
        if item.name in SKIP:
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=shutil.ignore_patterns(*SKIP))
        else:
            shutil.copy2(item, dest / item.name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(params, TINY), sort_keys=False))
    home = dest / "home"
    home.mkdir()
    env = os.environ | {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dest),
        "DVC_SITE_CACHE_DIR": str(dest / ".cache" / "dvc"),
        "DVC_GLOBAL_CONFIG_DIR": str(dest / ".cache" / "dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "s"]):
        subprocess.run(command, cwd=dest, env=env, check=True, capture_output=True)
    return dest, env


@pytest.mark.slow
def test_a_second_dvc_repro_stops_on_the_lock_and_the_first_completes(tmp_path):
    """DVC 3.67 releases its repo lock while a stage's command runs, so the second run
    gets past it and stops on the running stage's output lock instead, naming the first
    run's process; either message is DVC's refusal, and it must touch nothing."""
    dest, env = tiny_dvc_project(tmp_path)
    first = subprocess.Popen(
        ["dvc", "repro", "phantom"],
        cwd=dest,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (dest / "data" / "phantom.partial").exists() and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if first.poll() is not None:
        pytest.skip("the first run ended before the second could start")
    second = subprocess.run(["dvc", "repro"], cwd=dest, env=env, capture_output=True, text=True)
    still_running = first.poll() is None
    log = first.communicate()[0]
    assert still_running, "the phantom stage ended before the second repro was refused"
    assert second.returncode != 0
    message = second.stdout + second.stderr
    busy = rf"is busy, it is being blocked by:\s+\(PID {first.pid}\)"
    assert "Unable to acquire lock" in message or re.search(busy, message), message
    assert first.returncode == 0, log[-3000:]
    status = subprocess.run(["dvc", "status"], cwd=dest, env=env, capture_output=True, text=True)
    assert "phantom:" not in status.stdout  # the first run's outputs are whole and recorded
    assert "binarize:" in status.stdout  # and the second ran nothing after it
    assert not (dest / "data" / "phantom.partial").exists()


# ---- a full disk ----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (root only; the test is skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_one_error_and_leaves_no_partial_output(tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        out = disk / "big.csv"
        frame = pd.DataFrame({"path": [f"film{i:06d}.png" for i in range(20_000)], "score": 0.5})
        with pytest.raises(DiskFullError, match=rf"^{out}: no space left on the device: needs"):
            write_csv(out, frame)
        assert list(disk.iterdir()) == []


def test_a_stage_on_a_full_disk_stops_in_one_line_and_the_rerun_completes(tmp_path):
    chexpert = make_chexpert(tmp_path / "src", n_patients=60)
    (tmp_path / "p").mkdir()
    cwd = project(tmp_path / "p", chexpert)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["resize"] |= {"size": 64}  # 60 x 64 x 64 bytes: 240 KiB
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    with small_disk(cwd / "data", "128k") as data:
        assert stage("binarize", cwd).returncode == 0
        result = stage("resize", cwd)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: data/resized: no space left on the device: needs ")
        assert "240.1 KiB" in lines[-1] and "Traceback" not in result.stderr
        assert sorted(p.name for p in data.iterdir()) == ["labels.csv"]  # no partial store
        assert not (cwd / "reports" / "resize.json").exists()

        subprocess.run(["mount", "-o", "remount,size=1m", str(data)], check=True)
        assert stage("resize", cwd).returncode == 0
        assert len(ImageStore(data / "resized")) == 60


# ---- hostile and huge inputs ----------------------------------------------------------------


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A 467-byte PNG declaring side x side pixels: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def many_frames(path: Path, frames: int = 500, side: int = 256) -> None:
    """A DICOM of `frames` 12-bit frames (500 x 256 x 256: 64 MiB of pixel data)."""
    ds = dicom(np.zeros((side, side)))
    ds.NumberOfFrames = frames
    values = np.random.default_rng(0).integers(0, 4096, (frames, side, side), dtype=np.uint16)
    ds.PixelData = values.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    bomb_png(folder / "bomb.png")
    many_frames(folder / "cine.dcm")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_predict_lists_a_bomb_a_cine_dicom_and_an_empty_file_and_scores_the_rest(tmp_path, hostile):
    models = make_models(tmp_path, folds=1)
    films = tmp_path / "films"
    shutil.copytree(hostile, films)
    for k in range(3):
        Image.fromarray(radiograph(k)).save(films / f"film{k}.png")
    results = run_predict(tmp_path, str(films), "--models", str(models), "--setting", "baseline")
    assert sorted(Path(p).name for p in results["path"]) == ["film0.png", "film1.png", "film2.png"]
    errors = pd.read_csv(errors_path(tmp_path / "results.csv"))
    reasons = {Path(p).name: e for p, e in zip(errors["path"], errors["error"], strict=True)}
    assert set(reasons) == {"bomb.png", "cine.dcm", "empty.png"}
    assert reasons["bomb.png"].startswith("too large to decode safely")
    assert "10000000000 pixels" in reasons["bomb.png"]
    assert reasons["cine.dcm"] == "DICOM holds 500 frames; one radiograph frame expected"
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert all("\n" not in e for e in errors["error"])


def test_a_dicom_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    ds = dicom(np.zeros((64, 64)))
    ds.Rows = ds.Columns = 20_000  # 400 million pixels declared, 8 KiB stored
    ds.save_as(tmp_path / "huge.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match=r"huge\.dcm: DICOM declares 20000x20000 pixels, more"):
        read_image(tmp_path / "huge.dcm")


PEAK_GROWTH = textwrap.dedent(
    """
    import sys
    from cxrstn.images import read_image

    def status(key):  # this process's own figures: ru_maxrss would start at its parent's
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) // 1024  # MiB

    read_image(sys.argv[1])  # warm up: pydicom and its decoders imported
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from here
    before = status("VmRSS")
    try:
        read_image(sys.argv[2])
    except ValueError:
        pass
    print(status("VmHWM") - before)
    """
)


def test_a_500_frame_dicom_is_refused_without_reading_its_pixels(tmp_path, hostile):
    """Its 64 MiB of pixel data would be read (and decoded: 128 MiB) to find the frames."""
    single = tmp_path / "single.dcm"
    dicom(np.zeros((256, 256))).save_as(single, enforce_file_format=True)
    read_image(single)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    peak = subprocess.run(
        [sys.executable, "-c", PEAK_GROWTH, str(single), str(hostile / "cine.dcm")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(peak.stdout) < 16, f"reading the 500-frame file grew the peak by {peak.stdout} MiB"


def peak_rss_of_predict(tmp_path: Path, films: Path, models: Path, count: int) -> int:
    """Peak resident memory (KiB) of one `cxrstn predict` over `count` of the films."""
    listing = tmp_path / f"list{count}.csv"
    pd.DataFrame({"path": sorted(str(p) for p in films.iterdir())[:count]}).to_csv(
        listing, index=False
    )
    script = textwrap.dedent(
        f"""
        from cxrstn.cli import main
        main(["predict", {str(listing)!r}, "--out", {str(tmp_path / f"out{count}.csv")!r},
              "--models", {str(models)!r}, "--setting", "baseline", "--device", "cpu"])
        # VmHWM: this process's own peak (ru_maxrss would start at the forking parent's)
        print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
        """
    )
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_scoring_5000_images_takes_the_memory_of_500(tmp_path):
    """The films are 256 x 256 (64 KiB decoded): holding 5,000 of them would take 320 MiB,
    far above the 20 % allowed. The input check is on (the default): each film's features
    are reduced to one distance, never kept."""
    models = make_models(tmp_path, folds=1)
    films = tmp_path / "films"
    films.mkdir()
    rng = np.random.default_rng(0)
    base = radiograph(0, shape=(256, 256))
    for k in range(5000):
        noisy = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(films / f"film{k:05d}.png", compress_level=1)
    small = peak_rss_of_predict(tmp_path, films, models, 500)
    large = peak_rss_of_predict(tmp_path, films, models, 5000)
    results = pd.read_csv(tmp_path / "out5000.csv")
    assert len(results) == 5000 and results["input_check"].isin(["ok", "out_of_distribution"]).all()
    assert large <= 1.2 * small, f"peak RSS {small // 1024} MiB at 500, {large // 1024} at 5000"


# ---- kill -9 at a random moment of every stage ----------------------------------------------


def dvc(dest: Path, env: dict, *args: str) -> str:
    done = subprocess.run(["dvc", *args], cwd=dest, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def stage_outs(dest: Path) -> dict[str, dict]:
    """Each stage's outputs and their hashes, as dvc.lock records them."""
    lock = yaml.safe_load((dest / "dvc.lock").read_text())["stages"]
    return {
        name: {out["path"]: out.get("md5") for out in entry.get("outs", [])}
        for name, entry in lock.items()
    }


def leftovers(dest: Path) -> list[str]:
    """What an interrupted stage may leave: temporary outputs, run folders, checkpoints."""
    found = [p for p in dest.rglob("*.partial") if ".git" not in p.parts]
    found += list((dest / ".cache" / "detector-runs").glob("run-*"))
    found += list((dest / "checkpoints").rglob("*.pt"))
    found += list((dest / "models").glob(".detector-run-*"))
    return sorted(str(p.relative_to(dest)) for p in found)


def harmless(dest: Path, env: dict, paths: list[str]) -> bool:
    """Whether DVC ignores each of `paths` or no stage depends on or outputs them."""
    partials = [p for p in paths if p.endswith(".partial")]
    if partials:
        shown = subprocess.run(
            ["dvc", "check-ignore", *partials], cwd=dest, env=env, capture_output=True, text=True
        ).stdout.split()
        if sorted(shown) != sorted(partials):
            return False
    others = [p for p in paths if not p.endswith(".partial")]
    return all(p.startswith(("checkpoints/", ".cache/")) for p in others)


TIMING = re.compile(r"seconds|per_second")
"""Keys of the JSON reports that hold wall-clock times: they differ between any two runs."""


def without_timings(record):
    if isinstance(record, dict):
        return {k: without_timings(v) for k, v in record.items() if not TIMING.search(k)}
    if isinstance(record, list):
        return [without_timings(v) for v in record]
    return record


def same_outputs(dest: Path, expected: dict, reports: dict, name: str) -> list[str]:
    """The outputs of `name` that differ from the uninterrupted run's (JSON reports
    compared without their timings)."""
    differing = []
    for path, md5 in stage_outs(dest)[name].items():
        if md5 == expected[name][path]:
            continue
        if path in reports:
            now = without_timings(json.loads((dest / path).read_text()))
            if now == reports[path]:
                continue
        differing.append(path)
    return differing


KILLED_SEED = int(os.environ.get("CXRSTN_KILL_SEED", "0"))
"""Seed of the kill moments (set CXRSTN_KILL_SEED to try others; the moments are printed)."""


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CXRSTN_KILL_TESTS"),
    reason="9 minutes on 2 cores (the pipeline once, each stage killed and rerun): "
    "set CXRSTN_KILL_TESTS=1",
)
def test_every_stage_killed_at_a_random_moment_reruns_to_the_same_outputs(tmp_path):
    """For each stage of the tiny pipeline: `dvc repro -s -f STAGE` is SIGKILLed (its whole
    process group, as a batch system kills a job) at a random moment of its run; the plain
    rerun must complete, give the outputs of the uninterrupted run and leave `dvc status`
    clean.

    What the killed run left (a *.partial output, ultralytics' run folder, a checkpoint)
    is removed when the stage next runs. DVC serves the rerun from its run cache instead
    (same code, params and inputs as the uninterrupted run), running no code of ours, so
    such leftovers may stay; they must then be invisible to DVC: ignored (.dvcignore) or
    outside every stage's deps and outs."""
    dest, env = tiny_dvc_project(tmp_path)
    # The uninterrupted run, each stage timed from its "Running stage" line to the next.
    started = {}
    with subprocess.Popen(
        ["dvc", "repro"], cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as first:
        log = []
        for line in map(bytes.decode, first.stdout):
            log.append(line)
            if found := re.match(r"Running stage '([^']+)'", line):
                started[found[1]] = time.perf_counter()
    assert first.returncode == 0, "".join(log[-50:])
    order, ends = list(started), [*list(started.values())[1:], time.perf_counter()]
    seconds = {name: end - started[name] for name, end in zip(order, ends, strict=True)}
    expected = {name: outs for name, outs in stage_outs(dest).items() if name in seconds}
    reports = {
        path: without_timings(json.loads((dest / path).read_text()))
        for outs in expected.values()
        for path in outs
        if path.endswith(".json")
    }
    assert leftovers(dest) == []
    rng = np.random.default_rng(KILLED_SEED)
    victims = [name for name in order if "@" not in name or name.endswith("@0")]  # folds 1, 2
    # train as fold 0 does
    for name in victims:
        delay = float(rng.uniform(0.1, 0.9) * seconds[name])
        print(f"{name}: killed after {delay:.1f} s of {seconds[name]:.1f} s")
        process = subprocess.Popen(
            ["dvc", "repro", "-s", "-f", name],
            cwd=dest,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()
        dvc(dest, env, "repro", "-s", name)
        assert same_outputs(dest, expected, reports, name) == [], name
        status = dvc(dest, env, "status")
        assert "changed" not in status and "modified" not in status, f"{name}:\n{status}"
        left = leftovers(dest)
        print(f"  left after the rerun: {left or 'nothing'}")
        assert harmless(dest, env, left), f"{name}: {left}"
