import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cxrstn.cli import main, set_args
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
    with pytest.raises(SystemExit, match=r"detector\.augment\.cls not in the profile"):
        set_args(ours, {"detector": {"augment": {"mosaic": 1.0}}})
    with pytest.raises(SystemExit, match=r"detector\.extra not in params\.yaml"):
        set_args(ours, {"detector": {"augment": {"mosaic": 1.0, "cls": 0.5}, "extra": 1}})


def test_params_written_by_dvc_read_floats_as_floats(tmp_path):
    """`dvc exp run -S classifier.lr=1.0e-05` leaves `lr: 1e-05` in params.yaml (YAML 1.2)."""
    from cxrstn.io import load_params

    (tmp_path / "params.yaml").write_text(
        "classifier:\n  lr: 1e-05\n  name: 1e5x\nstn:\n  lr: 2E+3\n"
    )
    params = load_params(tmp_path / "params.yaml")
    assert params["classifier"]["lr"] == 1e-05 and isinstance(params["classifier"]["lr"], float)
    assert params["stn"]["lr"] == 2000.0
    assert params["classifier"]["name"] == "1e5x"  # not a number: stays a string
