"""The ST module's window parameterisation and the gradient through its sampler."""

import numpy as np
import pytest
import torch

from cxrstn.models import STModule
from cxrstn.roi import stn_window


def _module(**kw) -> STModule:
    torch.manual_seed(0)
    return STModule(output_size=16, loc_size=32, **kw)


def test_keep_inside_maps_any_output_to_a_window_on_the_image():
    """(1 - s) tanh keeps the whole window on the image; tanh alone lets it hang off."""
    raw = torch.randn(2000, 4, dtype=torch.float64) * 6
    inside = _module(init=(0.5, 0.5, 0, 0), scale_range=(0.2, 1.0), keep_inside=True)
    box = stn_window(*inside.bounded(raw).numpy().T, clip=False)
    assert box.min() >= 0 and box.max() <= 1
    loose = _module(init=(0.5, 0.5, 0, 0), scale_range=(0.2, 1.0))
    box = stn_window(*loose.bounded(raw).numpy().T, clip=False)
    assert box.min() < -0.2 and box.max() > 1.2


def test_keep_inside_raw_inverts_bounded_and_sets_the_initial_window():
    st = _module(init=(0.6, 0.4, 0.3, -0.5), scale_range=(0.2, 1.0), keep_inside=True)
    params = torch.tensor([[0.6, 0.4, 0.3, -0.5], [0.9, 0.25, -0.05, 0.7]], dtype=torch.float64)
    assert torch.allclose(st.bounded(st.raw(params)), params, atol=1e-9)
    out = st.params(torch.rand(3, 1, 64, 64))
    assert torch.allclose(out, torch.tensor([0.6, 0.4, 0.3, -0.5]).expand(3, 4), atol=1e-6)


def test_existing_parameterisations_are_unchanged():
    """Without keep_inside, scale_range squashes t by tanh alone, and null leaves it linear."""
    raw = torch.tensor([[0.0, 1.0, 0.5, -2.0]], dtype=torch.float64)
    st = _module(init=(0.5, 0.5, 0, 0), scale_range=(0.2, 1.0))
    expected = torch.cat([0.2 + 0.8 * torch.sigmoid(raw[:, :2]), torch.tanh(raw[:, 2:])], 1)
    assert torch.allclose(st.bounded(raw), expected)
    assert torch.equal(_module().bounded(raw), raw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"init": (1.0, 1.0, 0, 0)}, "needs stn.scale_range"),
        ({"init": (0.5, 0.5, 0, 0), "scale_range": (0.2, 1.5)}, "high <= 1"),
        ({"init": (0.5, 0.5, 0.6, 0), "scale_range": (0.2, 1.0)}, "below 1 - s_init"),
    ],
)
def test_keep_inside_rejects_what_it_cannot_honour(kw, message):
    with pytest.raises(ValueError, match=message):
        _module(keep_inside=True, **kw)


def _window_gradient(params: list[float], spot: tuple[int, int], side: int = 64) -> np.ndarray:
    """d(-mean of the sampled window)/d(sx, sy, tx, ty) for a bright blob (std 4 px) on black
    (smooth, so that every sample near it has a gradient)."""
    st = _module()
    yy, xx = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    x, y = spot
    image = torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 32).view(1, 1, side, side)
    p = torch.tensor([params], requires_grad=True)
    theta = st.theta(p)
    grid = torch.nn.functional.affine_grid(theta, (1, 1, 16, 16), align_corners=False)
    sampled = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    (-sampled.mean()).backward()
    return p.grad[0].numpy()


def test_the_sampler_gradient_moves_the_window_towards_what_the_loss_wants():
    """Wanting the bright blob in view pulls the window's centre towards it on each axis."""
    gx = _window_gradient([0.3, 0.3, 0.0, 0.0], spot=(42, 32))  # right of the window
    gy = _window_gradient([0.3, 0.3, 0.0, 0.0], spot=(32, 20))  # above it
    assert gx[2] < 0 and abs(gx[3]) < 1e-6 * abs(gx[2])  # descent raises tx: moves right
    assert gy[3] > 0 and abs(gy[2]) < 1e-6 * abs(gy[3])  # descent lowers ty: moves up


def test_forward_gradient_reaches_the_localization_net_when_shrinking():
    """With k > 1 samples averaged per output pixel (k from detached params), the loss still
    reaches every layer of the localization net."""
    st = _module(loc_norm=True, init=(1.0, 1.0, 0.0, 0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        st.regressor[-1].weight.normal_(0, 0.01)
    out, params = st(torch.rand(4, 1, 64, 64))  # 64 px into 16: k = 4 on both axes
    out.square().mean().backward()
    for name, parameter in st.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_clip_moves_windows_into_the_ranges_bounded_gives():
    st = _module(init=(0.5, 0.5, 0, 0), scale_range=(0.2, 1.0), keep_inside=True)
    params = torch.tensor([[1.3, 0.05, 0.9, -2.0], [0.5, 0.5, 0.1, -0.2]])
    clipped = st.clip(params)
    assert torch.allclose(clipped[0], torch.tensor([1.0, 0.2, 0.0, -0.8]))
    assert torch.equal(clipped[1], params[1])  # already inside: unchanged
    assert torch.equal(_module(init=(1, 1, 0, 0)).clip(params), params)  # no bounds


def test_reinforce_jitters_training_windows_and_its_term_is_the_score_function_gradient():
    """Training samples each window around the prediction; the term's gradient with respect
    to the predicted (sx, sy, tx, ty) is (loss - mean loss) * noise / sigma^2 per image, over
    the batch; evaluation uses the prediction itself."""
    from cxrstn.models import STN, Classifier, sample_window

    torch.manual_seed(0)
    st = STModule(32, (0.5, 0.5, 0, 0), loc_size=32, scale_range=(0.2, 1.0), keep_inside=True)
    model = STN(Classifier(0.125, 32, 0.0), st, reinforce_sigma=(0.05, 0.2))
    images = torch.rand(6, 1, 64, 64)
    model.train()
    torch.manual_seed(1)
    model(images)
    torch.manual_seed(1)
    model(images)  # the same draw: the jitter comes from torch's seeded generator
    noise = model.last_noise * torch.tensor([0.05, 0.05, 0.2, 0.2]) ** 2
    assert noise.abs().max() > 0 and noise[:, 2:].std() > 2 * noise[:, :2].std()
    losses = torch.arange(6.0)
    params = model.last_params
    (gradient,) = torch.autograd.grad(model.reinforce_term(losses), params)
    sigma2 = torch.tensor([0.05, 0.05, 0.2, 0.2]) ** 2
    expected = (losses - losses.mean())[:, None] * noise / sigma2 / 6
    assert torch.allclose(gradient, expected, atol=1e-5)
    model.eval()
    out = model(images)
    assert model.last_noise is None and model.reinforce_term(losses) == 0.0
    plain = model.classifier(sample_window(images, st.params(images), 32))
    assert torch.allclose(out, plain)


def test_random_windows_lie_wholly_on_the_image_with_sides_in_range():
    from cxrstn.models import random_windows

    torch.manual_seed(0)
    windows = random_windows(2000, (0.6, 0.8))
    scales, shifts = windows[:, :2], windows[:, 2:]
    assert windows.shape == (2000, 4)
    assert scales.min() >= 0.6 and scales.max() <= 0.8
    assert (shifts.abs() <= 1 - scales + 1e-6).all()
    # anywhere: both sides of the centre, up to the edges, independently in x and y
    assert shifts.min() < -0.15 and shifts.max() > 0.15
    assert abs(np.corrcoef(shifts[:, 0], shifts[:, 1])[0, 1]) < 0.1
    torch.manual_seed(0)
    assert torch.equal(random_windows(2000, (0.6, 0.8)), windows)  # torch's seeded generator


def test_given_windows_bypass_the_module():
    """The warm-up's random windows reach the classifier as they are; the module's own
    prediction and noise are not used."""
    from cxrstn.models import STN, Classifier, sample_window

    torch.manual_seed(0)
    st = STModule(32, (0.5, 0.5, 0, 0), loc_size=32, scale_range=(0.2, 1.0), keep_inside=True)
    model = STN(Classifier(0.125, 32, 0.0), st, reinforce_sigma=(0.05, 0.2)).eval()
    images = torch.rand(3, 1, 64, 64)
    windows = torch.tensor([[0.6, 0.7, 0.2, -0.1], [1.0, 1.0, 0.0, 0.0], [0.3, 0.3, -0.5, 0.5]])
    out = model(images, windows)
    assert torch.allclose(out, model.classifier(sample_window(images, windows, 32)))
    assert model.last_noise is None and torch.equal(model.last_params, windows)
    assert not torch.allclose(out, model(images))


def test_reinforce_pairs_mirror_each_images_noise_and_compare_its_two_losses():
    """With pairs, each image goes through mean + noise and mean - noise; its advantage is
    its loss minus the mean of its own two losses, so the difficulty of the image cancels."""
    from cxrstn.models import STN, Classifier

    torch.manual_seed(0)
    st = STModule(32, (0.5, 0.5, 0, 0), loc_size=32, scale_range=(0.2, 1.0), keep_inside=True)
    model = STN(Classifier(0.125, 32, 0.0), st, (0.05, 0.2), reinforce_pairs=True).train()
    images = torch.rand(3, 1, 64, 64)
    logits = model(images)
    assert logits.shape == (6,)
    sigma2 = torch.tensor([0.05, 0.05, 0.2, 0.2]) ** 2
    noise = model.last_noise * sigma2
    assert torch.allclose(noise[:3], -noise[3:]) and noise.abs().max() > 0
    params = model.last_params
    assert params.shape == (6, 4) and torch.equal(params[:3], params[3:])
    assert torch.allclose(model.last_windows, st.clip(params.detach() + noise))  # what it saw
    # image 0 loses 1.0 and 3.0 through its two windows: advantages -1 and +1; image 1
    # 5.0 and 5.0: none, however much harder it is than the others
    losses = torch.tensor([1.0, 5.0, 0.0, 3.0, 5.0, 2.0])
    (gradient,) = torch.autograd.grad(model.reinforce_term(losses), params)
    advantage = torch.tensor([-1.0, 0.0, -1.0, 1.0, 0.0, 1.0])
    expected = advantage[:, None] * noise / sigma2 / 6
    assert torch.allclose(gradient, expected, atol=1e-5)
    assert torch.allclose(gradient[1], torch.zeros(4)) and torch.allclose(
        gradient[4], torch.zeros(4)
    )
