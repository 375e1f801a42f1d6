"""The equivariance term (`stn.equivariance_weight`), its slope, and `stn.label_grad`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrstn.models import (
    STN,
    Classifier,
    STModule,
    equivariance_loss,
    equivariance_slope,
    random_views,
    sample_window,
    window_in_view,
)


def test_a_window_in_a_view_by_hand():
    # window: centre (0.2, -0.1), half-sides (0.5, 0.4); view: centre (0.1, 0.2), half-sides
    # (0.8, 0.5). In the view: centre ((0.2 - 0.1) / 0.8, (-0.1 - 0.2) / 0.5), sides s / h.
    window = torch.tensor([[0.5, 0.4, 0.2, -0.1]])
    view = torch.tensor([[0.8, 0.5, 0.1, 0.2]])
    expected = torch.tensor([[0.625, 0.8, 0.125, -0.6]])
    torch.testing.assert_close(window_in_view(window, view), expected)


def test_the_view_of_an_image_shows_the_window_where_window_in_view_puts_it():
    """A bright square framed by a window, seen through a view, is framed there by the
    window `window_in_view` gives: the geometry agrees with the sampler's."""
    image = torch.zeros(1, 1, 128, 128)
    image[..., 40:72, 64:96] = 1.0  # x 0.5-0.75, y 0.3125-0.5625 of the image
    window = torch.tensor([[0.25, 0.25, 0.25, -0.125]])  # exactly that square
    view = torch.tensor([[0.7, 0.8, 0.2, -0.1]])
    seen = sample_window(image, view, 128)
    inside = sample_window(seen, window_in_view(window, view), 32)
    assert inside[..., 2:-2, 2:-2].min() > 0.99  # the square fills the carried window


def test_equivariance_loss_by_hand_and_zero_for_a_window_that_follows():
    predicted = torch.tensor([[1.0, 0.5, 0.1, 0.0], [0.5, 0.5, 0.0, 0.0]])
    expected = torch.tensor([[0.5, 0.5, 0.0, 0.2], [0.5, 0.5, 0.0, 0.0]])
    # image 1: log(1/0.5)^2 + 0.1^2 + 0.2^2; image 2: 0
    by_hand = (np.log(2) ** 2 + 0.01 + 0.04) / 2
    assert float(equivariance_loss(predicted, expected)) == pytest.approx(by_hand, rel=1e-6)
    assert float(equivariance_loss(expected, expected)) == 0.0


def test_random_views_lie_on_the_image_with_zooms_in_range():
    torch.manual_seed(0)
    views = random_views(5000, 1.3)
    halves, centres = views[:, :2], views[:, 2:]
    assert halves.min() >= 1 / 1.3 - 1e-6 and halves.max() <= 1
    assert (centres.abs() <= 1 - halves + 1e-6).all()
    zooms = (1 / halves).log() / np.log(1.3)  # log-uniform zoom: uniform in [0, 1]
    assert abs(float(zooms.mean()) - 0.5) < 0.02 and float(zooms.std()) == pytest.approx(
        (1 / 12) ** 0.5, abs=0.02
    )


def _blob_images(n: int, side: int = 64, seed: int = 0):
    """A bright square of random size and place on noise; its box as (sx, sy, tx, ty)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.2, (n, 1, side, side)).astype(np.float32)
    boxes = []
    for image in images:
        w, h = rng.integers(12, 40, 2)
        x, y = rng.integers(2, side - w - 2), rng.integers(2, side - h - 2)
        image[0, y : y + h, x : x + w] = 0.9
        boxes.append([w / side, h / side, (2 * x + w) / side - 1, (2 * y + h) / side - 1])
    return torch.from_numpy(images), np.array(boxes)


def _stn(label_grad: str = "module") -> STN:
    torch.manual_seed(0)
    st = STModule(
        output_size=32,
        init=(0.8, 0.8, 0.0, 0.0),
        loc_size=32,
        loc_channels=(4, 8, 8, 8),
        loc_hidden=16,
        loc_norm=True,
        scale_range=(0.3, 1.0),
    )
    return STN(Classifier(0.0625, 32, 0.0, norm="batch"), st, label_grad=label_grad)


def test_a_constant_window_pays_the_term_and_the_term_alone_teaches_the_window_to_follow():
    """The untrained module (one window for all images) pays the term; trained on the term
    alone, with no label and no box, its window follows each blob's place and size."""
    model = _stn().train()
    train, _ = _blob_images(256)
    test, boxes = _blob_images(200, seed=1)
    torch.manual_seed(1)
    with torch.no_grad():
        assert model.equivariance_term(train[:32], 1.3).item() > 0.005
    optimizer = torch.optim.Adam(model.st.parameters(), lr=1e-3)
    for _ in range(300):
        batch = train[torch.randint(len(train), (32,))]
        loss = model.equivariance_term(batch, 1.3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        windows = model.st.params(test).numpy()
    r = [np.corrcoef(windows[:, column], boxes[:, column])[0, 1] for column in range(4)]
    assert min(r[2:]) > 0.8  # the centres follow at once (0.9-0.97 over seeds)
    assert np.mean(r[:2]) > 0.25  # the sides more slowly (0.38-0.52 after 300 steps)


@pytest.mark.parametrize(
    "label_grad, trains",
    [("module", {"body", "weight", "bias"}), ("bias", {"bias"}), ("none", set())],
)
def test_label_grad_says_what_the_classification_loss_trains_in_the_module(label_grad, trains):
    model = _stn(label_grad).train()
    last = model.st.regressor[-1]
    torch.nn.init.normal_(last.weight, std=0.01)  # zero at first: nothing would reach the body
    images, _ = _blob_images(8)
    loss = F.binary_cross_entropy_with_logits(model(images), torch.ones(8))
    loss.backward()
    parts = {
        "body": [p for n, p in model.st.named_parameters() if not n.startswith("regressor.3")],
        "weight": [last.weight],
        "bias": [last.bias],
    }
    trained = {
        part
        for part, params in parts.items()
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    }
    assert trained == trains
    assert all(p.grad is not None for p in model.classifier.parameters())


def test_label_grad_must_be_known():
    with pytest.raises(ValueError, match="stn.label_grad must be one of module, bias, none"):
        STN(Classifier(0.0625, 32), STModule(32, loc_size=32), label_grad="weights")


class _Centroid(torch.nn.Module):
    """A window on each image's brightness centroid (it follows the content exactly), or
    held at one place (it follows nothing)."""

    def __init__(self, follows: bool):
        super().__init__()
        self.follows = follows

    def sample_input(self, x):
        return x

    def params(self, x):
        n, _, h, w = x.shape
        grid_y, grid_x = torch.meshgrid(
            (torch.arange(h) + 0.5) / h * 2 - 1, (torch.arange(w) + 0.5) / w * 2 - 1, indexing="ij"
        )
        mass = x[:, 0].clamp_min(0)
        total = mass.sum(dim=(1, 2))
        centres = torch.stack(
            [(mass * grid_x).sum(dim=(1, 2)) / total, (mass * grid_y).sum(dim=(1, 2)) / total], 1
        )
        if not self.follows:
            centres = torch.zeros_like(centres)
        return torch.cat([torch.full((n, 2), 0.3), centres], dim=1)


def test_the_equivariance_slope_is_one_for_a_window_that_follows_and_zero_for_one_that_does_not():
    images = torch.zeros(6, 1, 96, 96)
    for i, image in enumerate(images):  # a small blob, well inside every view
        image[0, 40 + i : 50 + i, 38 + 2 * i : 46 + 2 * i] = 1.0
    assert equivariance_slope(_Centroid(True), images) == pytest.approx(1.0, abs=0.02)
    assert equivariance_slope(_Centroid(False), images) == 0.0
