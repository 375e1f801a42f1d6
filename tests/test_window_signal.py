"""The attention diagnostic (`cxrstn.window_signal`, `bench/stn_signal.py`): lung windows,
the window losses, and learners that move the window where their loss is lower."""

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
