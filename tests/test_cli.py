import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cxrstn.cli import CommandError, main, set_args
from cxrstn.images import write_store

ROOT = Path(__file__).resolve().parents[1]


def test_show_writes_the_stored_image(tmp_path):
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)
    write_store(tmp_path / "store", ["a/b.jpg"], [image], 64)
    main(["show", "a/b.jpg", str(tmp_path / "out.png"), "--store", str(tmp_path / "store")])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), image)


def test_set_args_lists_only_differences():
    ours = {
        "classifier": {"width": 0.125, "lr": 3e-4},
        "stn": {"loc_channels": [8, 16]},
        "detector": {"weights": None, "model": "yolov5n.yaml"},
    }
    theirs = {
        "classifier": {"width": 1.0, "lr": 3e-4},
        "stn": {"loc_channels": [16, 32]},
        "detector": {"weights": None, "model": "yolov5s.yaml"},
    }
    assert set_args(ours, theirs) == [
        "-S", "classifier.width=1.0", "-S", "stn.loc_channels=[16,32]",
        "-S", "detector.model=yolov5s.yaml",
    ]  # fmt: skip


def apply_set_args(params: dict, args: list[str]) -> dict:
    """What `dvc exp run -S key=value ...` does to params.yaml: each value parsed as YAML."""
    applied = copy.deepcopy(params)
    for option, assignment in zip(args[::2], args[1::2], strict=True):
        assert option == "-S"
        key, value = assignment.split("=", 1)
        *path, leaf = key.split(".")
        section = applied
        for part in path:
            section = section[part]
        section[leaf] = yaml.safe_load(value)
    return applied


def test_applying_the_paper_profile_gives_exactly_the_file():
    ours = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = yaml.safe_load((ROOT / "params.paper.yaml").read_text())
    args = set_args(ours, paper)
    assert apply_set_args(ours, args) == paper
    assert "classifier.width=1.0" in args and "classifier.input_size=512" in args


def test_a_profile_missing_a_parameter_is_refused():
    ours = {"detector": {"augment": {"mosaic": 1.0, "cls": 0.25}}}
    with pytest.raises(CommandError, match=r"detector\.augment\.cls not in the profile"):
        set_args(ours, {"detector": {"augment": {"mosaic": 1.0}}})
    with pytest.raises(CommandError, match=r"detector\.extra not in params\.yaml"):
        set_args(ours, {"detector": {"augment": {"mosaic": 1.0, "cls": 0.5}, "extra": 1}})


def test_params_written_by_dvc_read_floats_as_floats(tmp_path):
    """`dvc exp run -S classifier.lr=1.0e-05` leaves `lr: 1e-05` in params.yaml (YAML 1.2)."""
    from cxrstn.io import load_params

    (tmp_path / "params.yaml").write_text(
        "classifier:\n  lr: 1e-05\n  name: 1e5x\nstn:\n  lr: 2E+3\n"
    )
    params = load_params(tmp_path / "params.yaml", check=False)  # the YAML reader alone
    assert params["classifier"]["lr"] == 1e-05 and isinstance(params["classifier"]["lr"], float)
    assert params["stn"]["lr"] == 2000.0
    assert params["classifier"]["name"] == "1e5x"  # not a number: stays a string


# ---- conventions: --version, exit codes, doctor, predict --strict ---------------------------


def run_cli(args: list[str]) -> int:
    """The exit code `cxrstn ARGS` ends with (0 when main returns)."""
    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_version_is_the_package_version(capsys):
    from cxrstn import __version__

    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cxrstn {__version__}"


def test_predict_comes_first_in_the_help(capsys):
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    commands = [line.split()[0] for line in out.splitlines() if line.startswith("    ")]
    assert commands[0] == "predict" and "doctor" in commands
    assert "exit codes:" in out


def test_an_error_is_one_line_on_stderr_with_exit_code_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CXRSTN_TRACEBACK", raising=False)
    assert run_cli(["show", "a.jpg", str(tmp_path / "o.png"), "--store", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"cxrstn: error: {tmp_path}: no image store here")


def test_traceback_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRSTN_TRACEBACK", "1")
    with pytest.raises(Exception, match="no image store here"):
        main(["show", "a.jpg", str(tmp_path / "o.png"), "--store", str(tmp_path)])


def test_an_unknown_device_is_a_usage_error(tmp_path, capsys):
    assert run_cli(["predict", str(tmp_path), "--out", "x.csv", "--device", "gpu"]) == 2
    assert "expected auto, cpu, mps, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_doctor_names_each_source_and_the_missing_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chexpert = tmp_path / "real" / "CheXpert-v1.0-small"
    chexpert.mkdir(parents=True)
    (chexpert / "train.csv").write_text("Path\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] |= {"chexpert": str(tmp_path / "real"), "jsrt": "nowhere/All247images"}
    params["detector"]["weights"] = "pretrained/yolov5su.pt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    assert run_cli(["doctor"]) == 1
    captured = capsys.readouterr()
    lines = dict(line.split(maxsplit=1) for line in captured.out.splitlines())
    assert {"python", "torch", "torchvision", "ultralytics", "dvc", "device", "machine"} <= set(
        lines
    )
    assert lines["machine"].endswith(f"{os.cpu_count()} CPU cores")
    assert lines["data.chexpert"] == f"{tmp_path / 'real'}: found: {chexpert / 'train.csv'}"
    assert lines["data.jsrt"].startswith("nowhere/All247images: NOT FOUND")
    # The phantom's own paths do not exist before `dvc repro`: noted, not a problem.
    assert "not generated yet" in lines["data.montgomery"]
    assert lines["detector.weights"].startswith("pretrained/yolov5su.pt: NOT FOUND")
    assert "2 problem(s)" in captured.err

    params["data"]["jsrt"] = params["data"]["scr"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "yolov5su.pt").write_bytes(b"weights")
    assert run_cli(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("ready\n") and "pretrained/yolov5su.pt: found" in out


def test_predict_strict_fails_when_an_input_failed(tmp_path, capsys):
    from test_predict import make_models, radiograph

    models = make_models(tmp_path, folds=2)
    films = tmp_path / "films"
    films.mkdir()
    for k in range(2):
        Image.fromarray(radiograph(k)).save(films / f"film{k}.png")
    (films / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ["predict", str(films), "--models", str(models), "--device", "cpu"]

    assert run_cli([*args, "--out", str(tmp_path / "lenient.csv")]) == 0
    assert run_cli([*args, "--out", str(tmp_path / "strict.csv"), "--strict"]) == 3
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "broken.png" not in captured.out
    assert len(pd.read_csv(tmp_path / "strict.csv")) == 2  # the worklist is still written

    (films / "film0.png").unlink()
    (films / "film1.png").unlink()
    assert run_cli([*args, "--out", str(tmp_path / "none.csv")]) == 1
    assert "cxrstn: error: no image could be scored" in capsys.readouterr().err


def test_pyproject_declares_what_requirements_pins():
    """`pip install .` gets every runtime library requirements.txt pins, at a compatible
    release of the pinned version; the test tools go to the `dev` extra."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    dev = {Requirement(r).name: Requirement(r) for r in project["optional-dependencies"]["dev"]}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    assert set(dev) == {"pytest", "ruff"}
    assert set(declared) == set(pins) - set(dev)
    for name, version in pins.items():
        assert (dev | declared)[name].specifier.contains(version), name
    assert project["scripts"]["cxrstn"] == "cxrstn.cli:main"


def test_a_profile_with_a_missing_key_is_one_line_on_stderr(tmp_path, capsys):
    (tmp_path / "short.yaml").write_text("data:\n  chexpert: x\n")
    assert run_cli(["profile-args", str(tmp_path / "short.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cxrstn: error: ") and "not in the profile" in err
    assert err.count("\n") == 1
