from pathlib import Path

import numpy as np
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


def test_paper_params_only_use_known_keys():
    """params.paper.yaml must stay a variant of params.yaml: same keys, other values."""
    ours = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = yaml.safe_load((ROOT / "params.paper.yaml").read_text())
    args = set_args(ours, paper)
    assert "classifier.width=1.0" in args
    assert "classifier.input_size=512" in args
    assert "stn.sy_init=0.1" not in " ".join(args)  # same init as the default
