"""The heatmap-box diagnostic (`cxrstn.heatmap_boxes`, `bench/heatmap_boxes.py`): Grad-CAM
and the summed activations of a VGG block, their thresholded boxes, and their scores."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrstn import heatmap_boxes
from cxrstn.models import Classifier, normalise


def tiny_classifier(norm: str = "batch", input_size: int = 32) -> Classifier:
    torch.manual_seed(0)
    return Classifier(0.125, input_size, 0.0, norm=norm).eval()


def test_grad_cam_by_hand():
    """Two channels on a 4 x 4 grid; the score's gradient averages 1 on channel 0 and -0.5
    on channel 1, so the map is ReLU(A0 - 0.5 A1): the negative part is cut to 0."""
    a0 = torch.zeros(4, 4)
    a0[:2, :2] = 2.0  # a 2 x 2 block, top left
    a0[3, 3] = 1.5  # one pixel, bottom right
    a1 = torch.zeros(4, 4)
    a1[0, 3] = 4.0  # pushes its pixel below 0
    activations = torch.stack([a0, a1])[None]
    gradients = torch.stack([torch.ones(4, 4), torch.full((4, 4), -0.5)])[None]
    gradients[0, 0, 0, 0] = 3.0  # the mean, not the pixel, weighs a channel
    gradients[0, 0, 1, 1] = -1.0  # (3 - 1 + 14) / 16 = 1
    expected = a0.clone()
    got = heatmap_boxes.grad_cam(activations, gradients)
    assert got.shape == (1, 4, 4)
    torch.testing.assert_close(got[0], expected)

    # its boxes: at 0.5 of the max (1.0) the block and the pixel pass; the largest
    # component is the block, all pixels span the image; at 0.8 (1.6) only the block passes
    cam = got[0].numpy()
    np.testing.assert_allclose(heatmap_boxes.map_box(cam, 0.5, "largest"), [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(heatmap_boxes.map_box(cam, 0.5, "all"), [0, 0, 1, 1])
    np.testing.assert_allclose(heatmap_boxes.map_box(cam, 0.8, "all"), [0, 0, 0.5, 0.5])


def test_components_are_four_connected_and_the_largest_wins():
    """Pixels touching only at a corner are separate components, so a diagonal of four
    loses to a pair side by side; the threshold is a share of the map's maximum, and
    between equal components the first in raster order wins."""
    heat = np.zeros((10, 10))
    heat[range(4), range(4)] = 10.0  # a diagonal: four components of one pixel
    heat[8, 5:7] = 5.0  # a pair: one component of two, at half the peak
    np.testing.assert_allclose(heatmap_boxes.map_box(heat, 0.5, "largest"), [0.5, 0.8, 0.7, 0.9])
    np.testing.assert_allclose(heatmap_boxes.map_box(heat, 0.5, "all"), [0, 0, 0.7, 0.9])
    # above half the peak only the diagonal is left: its first pixel
    np.testing.assert_allclose(heatmap_boxes.map_box(heat, 0.51, "largest"), [0, 0, 0.1, 0.1])
    with pytest.raises(ValueError, match="rule"):
        heatmap_boxes.map_box(heat, 0.3, "biggest")


def test_an_empty_map_is_boxed_as_the_whole_image_and_counted():
    maps = np.zeros((3, 4, 4))
    maps[1, 2:, :2] = 1.0
    boxes, empty = heatmap_boxes.map_boxes(maps, 0.5, "largest")
    assert heatmap_boxes.map_box(maps[0], 0.5, "all") is None
    np.testing.assert_allclose(boxes, [[0, 0, 1, 1], [0, 0.5, 0.5, 1], [0, 0, 1, 1]])
    assert empty.tolist() == [True, False, True]


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_block_output_is_the_last_relu_before_each_pool(norm):
    """Blocks 3, 4 and 5 of VGG16 at 32 px give 8, 4 and 2 px maps of 32, 64 and 64
    channels at width 1/8."""
    model = tiny_classifier(norm)
    shapes = {}
    for block in (3, 4, 5):
        layer = heatmap_boxes.block_output(model.vgg, block)
        assert isinstance(layer, torch.nn.ReLU)
        hook = layer.register_forward_hook(lambda m, a, out, b=block: shapes.update({b: out.shape}))
        model(torch.rand(2, 1, 32, 32))
        hook.remove()
    assert shapes == {3: (2, 32, 8, 8), 4: (2, 64, 4, 4), 5: (2, 64, 2, 2)}
    with pytest.raises(ValueError, match="block must be in 1..5"):
        heatmap_boxes.block_output(model.vgg, 6)


def test_heatmaps_match_the_network_split_by_hand():
    """The hooked maps equal Grad-CAM computed on the VGG cut in two at block 4's ReLU by
    hand; the predicted-class map uses -logit where the logit is negative; the model's
    weights get no gradient."""
    model = tiny_classifier()
    torch.manual_seed(1)
    images = torch.rand(6, 1, 32, 32)
    with torch.no_grad():  # centre the logits on 0, so that both signs occur
        model.vgg.classifier[-1].bias -= model(images).median()
    maps = heatmap_boxes.heatmaps(model, images, block=4, side=4)  # 4 px: no resampling

    features = list(model.vgg.features)
    cut = features.index(heatmap_boxes.block_output(model.vgg, 4)) + 1
    with torch.no_grad():
        acts = torch.nn.Sequential(*features[:cut])(normalise(images))
    acts.requires_grad_(True)
    rest = torch.nn.Sequential(*features[cut:], model.vgg.avgpool, torch.nn.Flatten())
    logits = model.vgg.classifier(rest(acts)).squeeze(1)
    (grads,) = torch.autograd.grad(logits.sum(), acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    sign = torch.where(logits >= 0, 1.0, -1.0)[:, None, None, None]
    assert (logits > 0).any() and (logits < 0).any()  # both kinds of image are checked
    torch.testing.assert_close(maps["gradcam"], torch.relu((weights * acts).sum(1)).detach())
    expected = torch.relu((sign * weights * acts).sum(1)).detach()
    torch.testing.assert_close(maps["gradcam_predicted"], expected)
    torch.testing.assert_close(maps["activation"], acts.sum(1).detach())
    assert all(p.grad is None for p in model.parameters())

    upsampled = heatmap_boxes.heatmaps(model, images, block=4)  # to the input side
    assert upsampled["gradcam"].shape == (6, 32, 32)


def test_score_adds_the_horizontal_r_to_roi_quality():
    lungs = np.array([[0.1, 0.2, 0.7, 0.8], [0.2, 0.1, 0.9, 0.8], [0.3, 0.3, 0.8, 0.9]])
    boxes = lungs.copy()
    boxes[:, [0, 2]] = 1 - lungs[:, [2, 0]]  # mirrored left-right: x centre follows inversely
    result = heatmap_boxes.score(boxes, lungs)
    assert result["roi_r_centre"] == pytest.approx(1.0)
    assert result["roi_r_height"] == pytest.approx(1.0)
    assert result["r_x_centre"] == pytest.approx(-1.0)
    assert result["r_width"] == pytest.approx(1.0)  # a mirror keeps each width
    assert result["roi_iou"] < 1


def test_measure_gives_one_scored_row_per_variant():
    model = tiny_classifier()
    images = torch.rand(5, 1, 32, 32)
    lungs = np.tile([0.2, 0.2, 0.8, 0.8], (5, 1)) + np.linspace(0, 0.1, 5)[:, None]
    table = heatmap_boxes.measure(model, images, lungs, blocks=(4, 5), thresholds=(0.3, 0.5))
    assert len(table) == 2 * len(heatmap_boxes.MAPS) * 2 * 2
    assert set(table["rule"]) == {"largest", "all"}
    assert table["roi_iou"].between(0, 1).all() and table["empty"].between(0, 1).all()
    assert table[["roi_r_centre", "r_x_centre"]].abs().le(1).all().all()


def save_baseline(path: Path, params: dict) -> None:
    """A model.pt as training writes it, for a freshly built baseline."""
    from cxrstn.models import build_model

    classifier = {**params["classifier"], "weights": None}
    torch.manual_seed(0)
    model = build_model("baseline", classifier)
    config = {"setting": "baseline", "classifier": classifier, "stn": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config, "state_dict": model.state_dict()}, path)


def test_the_bench_scores_every_variant_on_a_project(tmp_path, make_project, monkeypatch, capsys):
    """bench/heatmap_boxes.py on a small project: 90 variants for the fold, each scored;
    the fixture gives every image the same lung box, so no box can follow it (every r 0);
    --abnormal-only keeps the abnormal test images; --grid writes a PNG."""
    import json
    import runpy

    import pandas as pd
    import yaml

    make_project(tmp_path, with_yolo=False)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    save_baseline(tmp_path / "models/baseline/fold0/model.pt", params)
    monkeypatch.chdir(tmp_path)
    bench = str(Path(__file__).parents[1] / "bench" / "heatmap_boxes.py")
    out, grid = tmp_path / "boxes.json", tmp_path / "grid.png"
    argv = ["heatmap_boxes.py", "--folds", "0", "--json", str(out), "--grid", str(grid)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(bench, run_name="__main__")
    assert done.value.code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 3 * 3 * len(heatmap_boxes.THRESHOLDS) * 2 and {
        row["fold"] for row in rows
    } == {0}
    for row in rows:
        assert 0 <= row["roi_iou"] <= 1 and 0 <= row["roi_lung_coverage"] <= 1
        assert row["roi_r_centre"] == row["roi_r_height"] == row["r_x_centre"] == 0
    assert grid.stat().st_size > 0

    folds = pd.read_csv(tmp_path / "data/folds.csv")
    test, abnormal = folds["fold"] == 0, (folds["fold"] == 0) & (folds["label"] == 1)
    assert f"fold 0: {int(test.sum())} test images" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", [*argv[:3], "--abnormal-only"])
    with pytest.raises(SystemExit):
        runpy.run_path(bench, run_name="__main__")
    assert 0 < abnormal.sum() < test.sum()
    assert f"fold 0: {int(abnormal.sum())} test images" in capsys.readouterr().out

    params["data"]["lung_boxes"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="data.lung_boxes is null"):
        runpy.run_path(bench, run_name="__main__")
