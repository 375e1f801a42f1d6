"""bench/: the loader comparison on small files and bench/gpu.sh's CPU dry run (no timings
are asserted, only that each measurement runs and reports what it says)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xxhash
import yaml
from conftest import load_bench
from PIL import Image

from cxrstn.images import ImageStore, attach_rows, new_store, read_image, resize_square

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_bench("bench")


def test_loader_comparison_runs_every_reader_on_the_same_files(tmp_path):
    bench = _bench()
    rng = np.random.default_rng(0)
    files = []
    for index in range(6):
        path = tmp_path / f"train/patient{index + 1:05d}/study1/view1_frontal.jpg"
        path.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (130, 100), dtype=np.uint8)).save(path)
        files.append(path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    rates = bench.bench_loader(tmp_path, files, 32, params, workers=0)
    names = list(rates)
    side = params["classifier"]["sample_size"]
    assert names[:3] == [
        "image store (memmap) + ImageDataset, augmented at the stored size",
        f"the same, shrunk to {side} px first (every setting's runs)",
        "decode the JPEG files every epoch (draft decode)",
    ]
    if importlib.util.find_spec("torchxrayvision"):
        assert [n for n in names if "torchxrayvision" in n] == [
            "torchxrayvision CheX_Dataset + XRayResizer(skimage)",
            "torchxrayvision CheX_Dataset + XRayResizer(cv2)",
        ]
    assert all(rate > 0 for rate in rates.values())


def test_resize_bench_takes_your_own_jpegs_and_describes_them(tmp_path):
    bench = _bench()
    for name, size in [("b/2.jpg", (60, 80)), ("a/1.jpeg", (100, 120)), ("c/3.jpg", (10, 10))]:
        (tmp_path / name).parent.mkdir()
        Image.fromarray(np.zeros(size[::-1], dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    files = bench.own_jpegs(str(tmp_path), 2)
    assert files == [tmp_path / "a/1.jpeg", tmp_path / "b/2.jpg"]
    megabytes = sum(f.stat().st_size for f in files) / 2 / 1e6
    bits = 8e6 * megabytes / ((100 * 120 + 60 * 80) / 2)
    assert bench.describe(files) == (
        f"80x100 on average, {megabytes:.2f} MB ({bits:.1f} bits a pixel)"
    )
    with pytest.raises(SystemExit, match="no .jpg or .jpeg file"):
        bench.own_jpegs(str(tmp_path / "a" / "empty"), 2)


def test_resize_bench_measures_the_stage_against_the_decode_floor(tmp_path, capsys):
    bench = _bench()
    rng = np.random.default_rng(0)
    files = []
    for index in range(4):
        files.append(tmp_path / f"{index}.jpg")
        Image.fromarray(rng.integers(0, 256, (200, 160), dtype=np.uint8)).save(files[-1])
    assert bench.draft_decode(files[0], 64) == (80, 100)  # DCT-scaled by 1/2, not resized
    with new_store(tmp_path / "store", [str(f) for f in files], 32) as store:
        attach_rows(store.images_file)  # as the stage's workers do
        # the stage's own code, writing row 2 of a store being built
        reason, nbytes, digest = bench._stage_task((2, files[2], 32))
        store.keep(2)
    assert reason is None and nbytes == files[2].stat().st_size
    assert digest == xxhash.xxh3_128_hexdigest(files[2].read_bytes())
    stored = ImageStore(tmp_path / "store")
    assert stored.paths == [str(files[2])]
    expected = resize_square(read_image(files[2], min_side=32), 32)
    np.testing.assert_array_equal(stored[str(files[2])], expected)
    rates = bench.bench_resize(files, 32, workers=1)
    assert "the resize stage (into the store, + XXH3), 1 processes" in rates
    out = capsys.readouterr().out
    assert "decode floor: draft decode alone, 1 process" in out
    assert "of the decode floor on 1 cores (target: at least 90 %; medians of 5 alternated" in out


def test_decoding_dataset_gives_the_store_s_augmented_tensors(tmp_path):
    bench = _bench()
    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((130, 100), 128, dtype=np.uint8)).save(path)
    image, label, index = bench.DecodingDataset([path], 32, lambda x: x)[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert abs(float(image.mean()) - 128 / 255) < 0.01 and index == 0


def test_gpu_bench_dry_run_reports_each_model_and_the_protocol_estimate():
    result = subprocess.run(
        ["bash", "bench/gpu.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("device: CPU (dry run)")
    models = [line for line in lines if "img/s" in line and "GFLOP/img" in line]
    assert [m.split()[0] for m in models] == ["VGG16", "STN", "ST"]
    assert "on 1 GPU" in lines[-1] and "on 8" in lines[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_bench_without_a_gpu_says_so():
    result = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "no CUDA GPU visible" in result.stderr


def _seeds():
    return load_bench("seeds")


def _exp(seed: int, aucs: dict, name: str | None = None) -> dict:
    """One entry as `dvc exp show --json` gives it: params and metrics under data."""
    metrics = {s: {"auc": {"mean": m, "std": sd}} for s, (m, sd) in aucs.items()}
    return {
        "rev": "workspace" if name is None else f"rev{seed}",
        "name": name,
        "data": {
            "params": {"params.yaml": {"data": {"train": {"seed": seed}}}},
            "metrics": {"reports/metrics.json": {"data": metrics}},
        },
    }


def test_seed_study_reads_every_experiment_and_measures_the_spread(capsys):
    seeds = _seeds()
    workspace = _exp(0, {"baseline": (90.0, 2.0), "yolo": (93.0, 1.0), "stn": (89.0, 3.0)})
    nested = [
        workspace,
        {
            "rev": "HEAD",
            "experiments": [
                {
                    "revs": [
                        _exp(
                            1,
                            {"baseline": (91.5, 5.0), "yolo": (92.0, 1.0), "stn": (89.5, 2.0)},
                            "seed1",
                        )
                    ]
                },
                {
                    "revs": [
                        _exp(
                            2,
                            {"baseline": (89.0, 1.0), "yolo": (93.5, 1.5), "stn": (90.0, 1.0)},
                            "seed2",
                        ),
                        # another experiment at seed 0 is not the study's
                        _exp(
                            0,
                            {"baseline": (50.0, 1.0), "yolo": (50.0, 1.0), "stn": (50.0, 1.0)},
                            "x",
                        ),
                    ]
                },
            ],
        },
    ]
    by_seed = seeds.experiment_metrics(nested)
    assert sorted(by_seed) == [0, 1, 2]
    table = seeds.summarise(by_seed)
    assert table["baseline"]["between_seeds"] == pytest.approx(2.5)  # 91.5 - 89.0
    assert table["baseline"]["fold_std"] == 5.0
    assert table["yolo"]["between_seeds"] == pytest.approx(1.5)
    assert table["stn"]["seeds"] == {0: (89.0, 3.0), 1: (89.5, 2.0), 2: (90.0, 1.0)}
    seeds.print_table(table)
    out = capsys.readouterr().out
    assert "| baseline | 90.00 ± 2.00 | 91.50 ± 5.00 | 89.00 ± 1.00 | 2.50 (over target)" in out
    assert "| stn | 89.00 ± 3.00 | 89.50 ± 2.00 | 90.00 ± 1.00 | 1.00 | 3.00 |" in out


def test_seed_study_stops_with_one_line_before_cloning_when_git_has_no_identity(monkeypatch):
    seeds = _seeds()
    monkeypatch.setattr(seeds, "git_identity", lambda root: (None, "a@example.org"))
    cloned = []
    monkeypatch.setattr(seeds, "fresh_clone", lambda *args: cloned.append(args))
    monkeypatch.setattr(sys, "argv", ["seeds.py"])
    with pytest.raises(SystemExit) as stop:
        seeds.main()
    message = str(stop.value.code)
    assert message.startswith("bench/seeds.py: git has no user name and email")
    assert "run `make setup` (sets one for this repository only)" in message
    assert "\n" not in message and cloned == []
    monkeypatch.setattr(seeds, "git_identity", lambda root: None)  # not a repository
    with pytest.raises(SystemExit):
        seeds.require_git_identity()
    monkeypatch.setattr(seeds, "git_identity", lambda root: ("A Person", "a@example.org"))
    assert seeds.require_git_identity() == ("A Person", "a@example.org")


def _simd():
    return load_bench("simd")


def test_simd_bench_runs_the_data_stages_the_detector_and_fold_0_of_each_setting():
    from cxrstn.io import load_params
    from cxrstn.settings import run_settings

    simd = _simd()
    plan = simd.pipeline(ROOT)
    settings = simd.trained_settings(plan)
    assert settings == run_settings(load_params(ROOT / "params.yaml"))
    wanted = simd.outputs(settings)
    ran = simd.needed(list(wanted), {s: up for s, (_, up) in plan.items()})
    assert ran == set(simd.DATA_OUTPUTS) | {f"train_{s}@0" for s in settings}
    assert plan["train_detector"][0] == "python stages/train_detector.py"
    for setting in settings:
        assert wanted[f"train_{setting}@0"][:2] == [
            f"models/{setting}/fold0/model.pt",
            f"reports/runs/{setting}/fold0/predictions.csv",
        ]
        assert f"--setting {setting} --fold 0" in plan[f"train_{setting}@0"][0]


def test_simd_bench_environments_hold_emulate_and_lift(tmp_path):
    from cxrstn.runtime import SIMD_HOLD

    simd = _simd()
    # a caller's shell holding SIMD variables or tool folders must not leak into a way
    shell = {"PATH": "/usr/bin", "HOME": "/root", "ATEN_CPU_CAPABILITY": "avx512"}
    shell |= {"CXRSTN_SIMD": "native", "YOLO_CONFIG_DIR": "/elsewhere", "MKL_CBWR": "AUTO"}
    held = simd.way_env("held", tmp_path, shell)
    assert not set(held) & (set(SIMD_HOLD) | {"CXRSTN_SIMD", "YOLO_CONFIG_DIR"})
    assert held["PYTHONPATH"] == str(tmp_path) and held["HOME"] == "/root"
    assert held["PATH"].startswith(f"{Path(sys.executable).parent}{os.pathsep}")
    avx2 = simd.way_env("avx2", tmp_path, shell)
    assert avx2["MKL_ENABLE_INSTRUCTIONS"] == "AVX2" and avx2["OPENBLAS_CORETYPE"] == "Haswell"
    assert avx2["ATEN_CPU_CAPABILITY"] == "avx2" and avx2["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "AVX512-SKX" in avx2["OPENCV_CPU_DISABLE"] and "CXRSTN_SIMD" not in avx2
    assert avx2["NPY_DISABLE_CPU_FEATURES"] == SIMD_HOLD["NPY_DISABLE_CPU_FEATURES"]
    native = simd.way_env("native", tmp_path, shell)
    assert native["CXRSTN_SIMD"] == "native" and not set(native) & set(SIMD_HOLD)


# A three-stage pipeline whose outputs depend on what the ways set: `first` writes the
# emulated MKL cap (held != avx2 when `leak` is on), `second` needs `first`'s output and
# writes CXRSTN_SIMD (only native differs), `third` writes a constant.
FAKE_STAGE = (
    f'{sys.executable} -c "import os, sys, pathlib, time; time.sleep(0.3); '
    "need, out, var = sys.argv[1:]; "
    "sys.exit(3) if need != '-' and not pathlib.Path(need).exists() else None; "
    "pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True); "
    "pathlib.Path(out).write_text(os.environ.get(var, '') if var != '-' else 'same')\""
)


def _fake_plan(leak: bool) -> tuple[dict, dict]:
    first_var = "MKL_ENABLE_INSTRUCTIONS" if leak else "-"
    plan = {
        "first": (f"{FAKE_STAGE} - data/first.txt {first_var}", set()),
        "second": (f"{FAKE_STAGE} data/first.txt data/second/x.txt CXRSTN_SIMD", {"first"}),
        "third": (f"{FAKE_STAGE} - models/third.pt -", set()),
        "unwanted": (f"{FAKE_STAGE} - data/unwanted.txt -", {"second"}),
    }
    wanted = {"first": ["data/first.txt"], "second": ["data/second"], "third": ["models/third.pt"]}
    return plan, wanted


def test_simd_bench_compares_the_ways_and_fails_when_held_and_avx2_differ(tmp_path, capsys):
    simd = _simd()
    plan, wanted = _fake_plan(leak=False)
    copies = {way: tmp_path / way for way in simd.WAYS}
    for dest in copies.values():
        dest.mkdir()
    hashes, seconds = simd.compare(copies, plan, wanted, jobs=2)
    assert not (copies["held"] / "data/unwanted.txt").exists()  # nothing needs it
    assert hashes["held"] == hashes["avx2"] != hashes["native"]
    assert hashes["held"]["models/third.pt"] == simd.md5(copies["native"] / "models/third.pt")
    assert list(hashes["held"]) == ["data/first.txt", "data/second", "models/third.pt"]
    assert list(seconds["native"]) == ["first", "second", "third"]
    assert all(0.3 < s < 30 for way in seconds.values() for s in way.values())
    assert simd.report(hashes, seconds) == []
    out = capsys.readouterr().out
    assert "| data/second | " in out and out.count("| yes |") == 3
    assert "| all stages | " in out and "native / held" in out

    plan, wanted = _fake_plan(leak=True)
    for dest in copies.values():
        shutil.rmtree(dest)
        dest.mkdir()
    hashes, seconds = simd.compare(copies, plan, wanted, jobs=1)
    assert simd.report(hashes, seconds) == ["data/first.txt"]
    assert "| data/first.txt | " in capsys.readouterr().out.split("NO |")[0]


def test_simd_bench_stops_on_a_failed_stage_with_its_log(tmp_path):
    simd = _simd()
    plan, wanted = _fake_plan(leak=False)
    plan["first"] = (
        f"{sys.executable} -c \"print('the phantom broke'); raise SystemExit(2)\"",
        set(),
    )
    copies = {way: tmp_path / way for way in simd.WAYS}
    for dest in copies.values():
        dest.mkdir()
    with pytest.raises(SystemExit) as stop:
        simd.compare(copies, plan, wanted, jobs=2)
    assert "failed (exit code 2)" in str(stop.value) and "the phantom broke" in str(stop.value)
    assert not any((dest / "data/second").exists() for dest in copies.values())


def test_simd_bench_hashes_an_output_as_dvc_sees_it(tmp_path):
    simd = _simd()
    (tmp_path / "out/sub").mkdir(parents=True)
    (tmp_path / "out/sub/a.txt").write_text("a")
    before = simd.md5(tmp_path / "out")
    (tmp_path / "out/sub/labels.cache").write_text("written by ultralytics")
    assert simd.md5(tmp_path / "out") == before
    (tmp_path / "out/sub/a.txt").rename(tmp_path / "out/sub/b.txt")
    assert simd.md5(tmp_path / "out") != before  # names count, not only contents
    assert simd.md5(tmp_path / "nothing") == "missing"


def test_simd_bench_schedule_keeps_to_jobs_and_dependency_order():
    simd = _simd()

    class Finishes:  # a process that ends at its second poll
        def __init__(self, code=0):
            self.polls, self.code = 0, code

        def poll(self):
            self.polls += 1
            return self.code if self.polls > 1 else None

    upstream = {"a": set(), "b": {"a"}, "c": set(), "d": {"b", "c"}, "e": set()}
    running, most, events = set(), [0], []

    def start(task):
        assert upstream[task] <= {t for kind, t in events if kind == "hashed"}
        running.add(task)
        most[0] = max(most[0], len(running))
        events.append(("start", task))
        return Finishes()

    def finished(task):
        running.discard(task)
        events.append(("hashed", task))

    seconds = simd.schedule(upstream, 2, start, finished, order=lambda t: t)
    assert set(seconds) == set(upstream) and most[0] == 2
    assert [t for kind, t in events if kind == "start"][:2] == ["a", "c"]
    with pytest.raises(ValueError, match="never run"):
        simd.schedule({"x": {"missing"}}, 2, start, finished, order=lambda t: t)


def test_simd_bench_probe_sees_the_emulated_avx2_machine_use_no_avx512(capsys):
    simd = _simd()
    found = {way: simd.probe(way, ROOT) for way in ("avx2", "native")}
    assert set(found["avx2"]) == {"numpy", "ATen", "oneDNN", "MKL", "OpenCV", "OpenBLAS"}
    assert found["avx2"]["ATen"] == "AVX2" and found["avx2"]["numpy"] == "AVX2"
    assert simd.check_emulation(found) == []
    assert "| OpenCV | AVX2 |" in capsys.readouterr().out
    if "AVX512" in found["native"]["ATen"]:  # an AVX-512 CPU: the caps take something away
        assert found["native"]["numpy"] != "AVX2"
    leaky = {"avx2": found["avx2"] | {"OpenCV": "AVX512-SKX", "MKL": "CNR AVX512"}}
    assert simd.check_emulation(leaky) == ["OpenCV"]  # MKL's mode is shown, not checked
