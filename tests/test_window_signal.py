"""The attention diagnostic (`cxrstn.window_signal`, `bench/stn_signal.py`): lung windows,
the window losses, and learners that move the window where their loss is lower."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrstn import window_signal
from cxrstn.models import STN, Classifier, STModule
from cxrstn.roi import stn_window

# the REINFORCE recipe's learning rates; the loc net below its last layer at its own
RECIPE = {"lr": 5e-3, "loc_lr": 1e-3}


def tiny_stn(pairs: bool = True) -> STN:
    torch.manual_seed(0)
    st = STModule(32, (0.7, 0.7, 0, 0), loc_size=16, scale_range=(0.3, 1.0), keep_inside=True)
    return STN(Classifier(0.125, 32, 0.0), st, (0.05, 0.15), reinforce_pairs=pairs)


def test_window_params_are_the_inverse_of_stn_window():
    boxes = np.array([[0.2, 0.1, 0.8, 0.7], [0.0, 0.0, 1.0, 1.0], [0.1, 0.3, 0.5, 0.9]])
    params = window_signal.window_params(boxes)
    assert torch.allclose(params[0], torch.tensor([0.6, 0.6, 0.0, -0.2]))
    assert torch.allclose(params[1], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(stn_window(*params.numpy().T), boxes, atol=1e-6)


def test_box_loss_is_the_squared_distance_to_the_images_lung_window():
    loss = window_signal.box_loss(np.array([[0.2, 0.1, 0.8, 0.7], [0.0, 0.0, 1.0, 1.0]]))
    windows = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # image 0: (0.1^2 + 0.1^2 + 0 + 0.2^2); the second window belongs to image 1 (0.25 + 0.25)
    got = loss(windows, torch.tensor([0, 1]), None)
    assert torch.allclose(got, torch.tensor([0.06, 0.5]))


def test_label_loss_is_each_windows_cross_entropy_on_its_images_label():
    loss = window_signal.label_loss([1, 0, 1])
    got = loss(None, torch.tensor([0, 1, 1]), torch.tensor([0.0, 2.0, -1.0]))
    expected = [np.log(2), np.log1p(np.exp(2.0)), np.log1p(np.exp(-1.0))]
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float32), atol=1e-6)


def test_reinforce_moves_the_window_towards_lower_loss_and_leaves_the_classifier():
    """Every image's lung window sits low (ty 0.5): the module's prediction goes down from
    its start at the centre, while the classifier is not touched."""
    model = tiny_stn()
    images = torch.rand(32, 1, 32, 32)
    before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    lungs = np.tile([0.15, 0.45, 0.85, 1.0], (32, 1))  # window (0.7, 0.55, 0, 0.45)
    start = window_signal.framing(model.st, images, lungs)
    window_signal.reinforce(model, images, window_signal.box_loss(lungs), 4, 8, RECIPE)
    model.st.eval()
    with torch.no_grad():
        ty = model.st.params(images)[:, 3]
    assert ty.mean() > 0.1, ty.mean()
    assert window_signal.framing(model.st, images, lungs)["roi_iou"] > start["roi_iou"]
    for key, value in model.classifier.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_reinforce_needs_mirrored_pairs():
    with pytest.raises(ValueError, match="reinforce_pairs"):
        window_signal.reinforce(
            tiny_stn(pairs=False),
            torch.rand(4, 1, 32, 32),
            window_signal.label_loss([0] * 4),
            1,
            2,
            RECIPE,
        )


def test_fit_to_boxes_learns_windows_that_depend_on_the_image():
    """Bright images have their lungs high, dark ones low: told the boxes, the module's
    windows follow (r > 0.9), where the untrained module gives one window for all."""
    torch.manual_seed(0)
    bright = torch.rand(64) > 0.5
    images = torch.rand(64, 1, 32, 32) * 0.2 + bright[:, None, None, None] * 0.8
    lungs = np.where(bright.numpy()[:, None], [0.15, 0.05, 0.85, 0.6], [0.15, 0.4, 0.85, 0.95])
    model = tiny_stn()
    assert window_signal.framing(model.st, images, lungs)["window_centre_std"] == 0
    window_signal.fit_to_boxes(model, images, lungs, epochs=10, batch=8, stn=RECIPE)
    result = window_signal.framing(model.st, images, lungs)
    assert result["roi_r_centre"] > 0.9 and result["window_centre_std"] > 0.1


def save_stn(path, params: dict, stn: dict) -> None:
    """A model.pt as training writes it, for a freshly built STN."""
    from cxrstn.models import build_model

    classifier = {**params["classifier"], "weights": None}
    torch.manual_seed(0)
    model = build_model("stn", classifier, stn)
    config = {"setting": "stn", "classifier": classifier, "stn": stn}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config, "state_dict": model.state_dict()}, path)


def test_the_bench_scores_every_learner_on_a_project(tmp_path, make_project, monkeypatch):
    """bench/stn_signal.py on a small project: all five rows, each scored against the lung
    boxes; the untrained module's window (0.7 x 0.7, centred) against the fixture's lung box
    (x 0.2-0.8, y 0.25-0.75) by hand: IoU 0.30 / 0.49, the whole lung inside it."""
    import json
    import runpy

    import yaml

    make_project(tmp_path, with_yolo=False)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    stn = params["stn"] | {"sx_init": 0.7, "sy_init": 0.7, "scale_range": [0.3, 1.0]}
    stn |= {"keep_inside": True, "lr": 5e-4, "loc_lr": 3e-4}
    save_stn(tmp_path / "models/stn/fold0/model.pt", params, stn)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "signal.json"
    bench = str(Path(__file__).parents[1] / "bench" / "stn_signal.py")
    monkeypatch.setattr("sys.argv", ["stn_signal.py", "--epochs", "1", "--json", str(out)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(bench, run_name="__main__")
    assert done.value.code == 0
    result = json.loads(out.read_text())
    assert result["stn"]["reinforce_sigma"] == [0.05, 0.15] and result["stn"]["reinforce_pairs"]
    rows = [k for k in result if k not in ("fold", "epochs", "stn")]
    assert len(rows) == 5
    for row in rows:
        assert 0 <= result[row]["roi_iou"] <= 1 and 0 <= result[row]["roi_lung_coverage"] <= 1
    own = result["the trained STN's own windows"]
    assert own["roi_iou"] == pytest.approx(0.30 / 0.49, abs=1e-3)
    assert own["roi_lung_coverage"] == pytest.approx(1.0)

    params["data"]["lung_boxes"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(SystemExit, match="data.lung_boxes is null"):
        runpy.run_path(bench, run_name="__main__")


def test_fit_equivariant_trains_the_module_alone_by_the_equivariance_term():
    torch.manual_seed(0)
    model = tiny_stn()
    stn = {"lr": 1e-3, "loc_lr": None, "equivariance_zoom": 1.3}
    images = torch.rand(16, 1, 64, 64)
    images[:8, :, 10:30, 10:30] = 1.0  # something to follow, in half the images
    classifier = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    torch.manual_seed(1)
    before = model.equivariance_term(images, 1.3).item()
    window_signal.fit_equivariant(model, images, epochs=20, batch=8, stn=stn)
    torch.manual_seed(1)
    assert model.equivariance_term(images, 1.3).item() < before
    for name, value in model.classifier.state_dict().items():
        assert torch.equal(value, classifier[name])
