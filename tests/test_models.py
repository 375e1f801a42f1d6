import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs

from cxrstn.models import (
    STN,
    Classifier,
    STModule,
    authors_localization,
    build_model,
    gflops,
    load_vgg_weights,
    load_warm_start,
    sample_window,
    vgg16_single,
)

STN_PARAMS = {
    "sx_init": 1.0,
    "sy_init": 0.1,
    "tx_init": 0.0,
    "ty_init": 0.0,
    "loc_size": 32,
    "loc_channels": [4, 4, 8, 8],
    "loc_hidden": 16,
    "lr": 1e-3,
    "loc_net": "compact",
}
CLASSIFIER = {
    "arch": "vgg16",
    "in_channels": 1,
    "width": 1 / 16,
    "input_size": 32,
    "weights": None,
    "dropout": 0.5,
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_width_vgg16_has_the_single_output_count_minus_two_input_channels():
    # torchvision's VGG16 with one output and 3 input channels has 134,264,641 parameters;
    # one input channel drops 2 x 64 x 3 x 3 first-layer weights.
    assert n_params(vgg16_single(1.0)) == 134_264_641 - 2 * 64 * 9


def test_width_scales_every_layer_of_the_same_topology():
    model = vgg16_single(1 / 8)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [v // 8 for v in cfgs["D"] if v != "M"]
    expected, channels_in = 0, 1
    for conv in convs:
        expected += channels_in * conv.out_channels * 9 + conv.out_channels
        channels_in = conv.out_channels
    expected += (64 * 49 * 512 + 512) + (512 * 512 + 512) + (512 + 1)
    assert n_params(model) == expected == 2_099_737


def test_dropout_sets_both_head_dropouts():
    rates = [m.p for m in vgg16_single(1 / 16, dropout=0.2).classifier if isinstance(m, nn.Dropout)]
    assert rates == [0.2, 0.2]


def test_classifier_downsamples_any_input_to_one_logit_per_image():
    model = Classifier(width=1 / 16, input_size=32)
    assert model(torch.rand(3, 1, 64, 64)).shape == (3,)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2,)


def test_three_channel_weights_become_their_channel_sum():
    model = vgg16_single(1 / 16)
    state = model.state_dict()
    rgb = torch.randn(4, 3, 3, 3)
    state["features.0.weight"] = rgb
    state["classifier.6.weight"] = torch.zeros(1000, 256)  # an ImageNet head: left as is
    path = "/tmp/cxrstn_test_vgg_rgb.pt"
    torch.save(state, path)
    head = model.classifier[6].weight.clone()
    load_vgg_weights(model, path)
    gray = torch.rand(1, 1, 8, 8)
    conv3 = nn.Conv2d(3, 4, 3, padding=1)
    conv3.weight.data, conv3.bias.data = rgb, state["features.0.bias"]
    torch.testing.assert_close(model.features[0](gray), conv3(gray.repeat(1, 3, 1, 1)))
    assert torch.equal(model.classifier[6].weight, head)


def test_st_module_at_init_samples_the_central_tenth_vertically():
    # Horizontal stripes: row r has value r / 255. With sy = 0.1 and 10 output rows,
    # output row i samples input y = ((0.1 * ((2i + 1) / 10 - 1) + 1) * 100 - 1) / 2 = 45 + i.
    side = 100
    image = (torch.arange(side, dtype=torch.float32) / 255).view(1, 1, side, 1)
    image = image.expand(1, 1, side, side).contiguous()
    st = STModule(output_size=10, init=(1.0, 0.1, 0.0, 0.0), loc_size=32)
    out, params = st(image)
    assert out.shape == (1, 1, 10, 10)
    expected_rows = (45 + torch.arange(10, dtype=torch.float32)) / 255
    torch.testing.assert_close(out[0, 0], expected_rows.view(10, 1).expand(10, 10))
    torch.testing.assert_close(params, torch.tensor([[1.0, 0.1, 0.0, 0.0]]))


def test_st_module_translation_moves_the_window():
    # ty = 0.5 shifts the sampled rows by a quarter of the image: 45 + 25 = 70.
    side = 100
    image = (torch.arange(side, dtype=torch.float32) / 255).view(1, 1, side, 1)
    st = STModule(output_size=10, init=(1.0, 0.1, 0.0, 0.5), loc_size=32)
    out, _ = st(image.expand(1, 1, side, side).contiguous())
    expected_rows = (70 + torch.arange(10, dtype=torch.float32)) / 255
    torch.testing.assert_close(out[0, 0], expected_rows.view(10, 1).expand(10, 10))


def test_st_module_averages_where_it_shrinks_instead_of_aliasing():
    # Columns repeat 0, 1, 0, 0. Shrinking 64 columns to 16 averages 4 samples per output
    # pixel, on the centres of 4 neighbouring columns: 0.25 everywhere. Plain bilinear
    # sampling at 16 points would read x = 4j + 1.5, halfway between a 1 and a 0: 0.5.
    columns = (torch.arange(64) % 4 == 1).float()
    image = columns.view(1, 1, 1, 64).expand(1, 1, 64, 64).contiguous()
    st = STModule(output_size=16, init=(1.0, 0.1, 0.0, 0.0), loc_size=32)
    out, _ = st(image)
    torch.testing.assert_close(out, torch.full((1, 1, 16, 16), 0.25))


def test_sample_size_shrinks_the_input_first_and_is_checked():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 64, 64)
    st = STModule(output_size=16, init=(0.5, 0.6, 0.1, -0.2), loc_size=16, sample_size=32)
    plain = STModule(output_size=16, init=(0.5, 0.6, 0.1, -0.2), loc_size=16)
    plain.load_state_dict(st.state_dict())
    small = torch.nn.functional.interpolate(image, size=(32, 32), mode="bilinear", antialias=True)
    out, params = st(image)
    expected, expected_params = plain(small)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(params, expected_params)
    assert torch.equal(st.sample_input(small), small)  # already small enough: unchanged
    with pytest.raises(ValueError, match=r"classifier.sample_size \(8\) must be at least"):
        STModule(output_size=16, sample_size=8)


def test_an_stn_at_the_identity_sees_exactly_what_the_baseline_sees():
    """One input path: the same source copy and the same sampling function, so an ST
    module at the identity hands the classifier the baseline's very input, and with the
    same seed both start from the same classifier and the same random stream."""
    classifier = CLASSIFIER | {"sample_size": 64}
    identity = STN_PARAMS | {"sy_init": 1.0}
    torch.manual_seed(0)
    baseline = build_model("baseline", classifier).eval()
    after_baseline = torch.rand(1)
    torch.manual_seed(0)
    stn = build_model("stn", classifier, identity).eval()
    assert torch.equal(torch.rand(1), after_baseline)  # the ST module leaves the stream alone
    weights, stn_weights = baseline.state_dict(), stn.classifier.state_dict()
    assert all(torch.equal(weights[name], stn_weights[name]) for name in weights)
    image = torch.rand(3, 1, 128, 128)
    windowed, params = stn.st(image)
    assert torch.equal(params, torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 3))
    with torch.no_grad():
        torch.testing.assert_close(stn(image), baseline(image), rtol=0, atol=1e-6)
    # The whole 64 px copy into 32 px is a 2 x 2 box average of the copy's pixels.
    copy = torch.nn.functional.interpolate(image, size=(64, 64), mode="bilinear", antialias=True)
    expected = torch.nn.functional.avg_pool2d(copy, 2)
    torch.testing.assert_close(windowed, expected, rtol=0, atol=1e-6)


def test_classifier_sample_size_must_not_be_below_its_input():
    with pytest.raises(ValueError, match=r"classifier.sample_size \(16\) must be at least"):
        Classifier(width=1 / 16, input_size=32, sample_size=16)


def test_batch_norm_follows_every_convolution_of_vgg16():
    plain = vgg16_single(width=1 / 16)
    normed = vgg16_single(width=1 / 16, norm="batch")
    convs = [m for m in normed.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in normed.features if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(norms) == 13
    assert all(
        isinstance(normed.features[i + 1], nn.BatchNorm2d)
        for i, m in enumerate(normed.features)
        if isinstance(m, nn.Conv2d)
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    with pytest.raises(ValueError, match="classifier.norm must be one of none, batch"):
        vgg16_single(norm="layer")


def test_gradients_reach_the_localization_net():
    torch.manual_seed(0)
    model = build_model("stn", CLASSIFIER, STN_PARAMS)
    assert isinstance(model, STN)
    images, labels = torch.rand(4, 1, 64, 64), torch.tensor([0.0, 1.0, 0.0, 1.0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    loss = nn.functional.binary_cross_entropy_with_logits(model(images), labels)
    loss.backward()
    # The final layer starts at zero weights, so the first pass reaches it ...
    assert model.st.regressor[-1].weight.grad.abs().sum() > 0
    torch.testing.assert_close(model.last_params[0], torch.tensor([1.0, 0.1, 0.0, 0.0]))
    optimizer.step()
    optimizer.zero_grad()
    # ... and once it moved, the gradient flows on into the first convolution.
    nn.functional.binary_cross_entropy_with_logits(model(images), labels).backward()
    assert model.st.localization[0].weight.grad.abs().sum() > 0


def test_build_model_rejects_an_unknown_setting_or_arch():
    with pytest.raises(ValueError, match="unknown setting"):
        build_model("resnet", CLASSIFIER)
    with pytest.raises(ValueError, match="classifier.arch must be vgg16"):
        build_model("baseline", CLASSIFIER | {"arch": "resnet50"})


def test_gflops_counts_two_flops_per_multiply_add():
    assert gflops(nn.Linear(10, 20), torch.zeros(1, 10)) == pytest.approx(2 * 10 * 20 / 1e9)


@pytest.mark.parametrize("side, flat", [(256, 18_432), (512, 128 * 28 * 28), (80, 128)])
def test_authors_localization_net_fits_any_input_size(side, flat):
    # Their first dense layer's 18,432 inputs are 128 x 12 x 12: a 256 px input.
    net, n = authors_localization(3, side)
    assert n == flat
    assert net(torch.zeros(1, 3, side, side)).flatten(1).shape == (1, flat)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [7, 5, 5, 5]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert all(c.padding == (0, 0) for c in convs)
    # each conv is followed by max-pool, then ReLU
    kinds = [type(m) for m in net]
    assert kinds[:3] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU]


def test_authors_localization_net_refuses_a_too_small_input():
    with pytest.raises(ValueError, match="larger input than 40 px"):
        authors_localization(1, 40)


def test_stn_with_the_authors_net_and_three_channels():
    torch.manual_seed(0)
    classifier = CLASSIFIER | {"in_channels": 3, "input_size": 80}
    model = build_model("stn", classifier, STN_PARAMS | {"loc_net": "authors"})
    assert model.classifier.vgg.features[0].in_channels == 3
    assert model.st.localization[0].in_channels == 3
    regressor = [m for m in model.st.regressor if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in regressor] == [(128, 32), (32, 4)]
    assert model(torch.rand(2, 1, 96, 96)).shape == (2,)
    torch.testing.assert_close(model.last_params[0], torch.tensor([1.0, 0.1, 0.0, 0.0]))
    with pytest.raises(ValueError, match="loc_net must be compact or authors"):
        build_model("stn", CLASSIFIER, STN_PARAMS | {"loc_net": "resnet"})


def test_three_channels_repeat_the_gray_image():
    torch.manual_seed(0)
    model = Classifier(width=1 / 16, input_size=32, in_channels=3).eval()
    single = Classifier(width=1 / 16, input_size=32, in_channels=1).eval()
    state = model.state_dict()
    state["vgg.features.0.weight"] = state["vgg.features.0.weight"].sum(1, keepdim=True)
    single.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model(x), single(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        Classifier(in_channels=2)


@pytest.mark.parametrize("init", [(1.0, 1.0, 0.0, 0.0), (1.0, 0.1, 0.2, -0.3)])
def test_bounded_outputs_start_exactly_at_the_init_and_stay_in_range(init):
    torch.manual_seed(0)
    st = STModule(output_size=8, init=init, loc_size=16, scale_range=(0.05, 1.25))
    torch.testing.assert_close(st.params(torch.rand(2, 1, 32, 32)), torch.tensor([init] * 2))
    # Whatever the last layer says, the scales stay in (0.05, 1.25), translations in (-1, 1).
    extreme = torch.tensor([[-50.0, 50.0, -50.0, 50.0], [3.0, -3.0, 0.5, -0.5]])
    params = st.bounded(extreme)
    assert ((params[:, :2] >= 0.05) & (params[:, :2] <= 1.25)).all()
    assert (params[:, 2:].abs() <= 1).all()
    torch.testing.assert_close(st.bounded(st.raw(params[1:])), params[1:])


def test_bounded_outputs_refuse_an_init_outside_the_range():
    with pytest.raises(ValueError, match="scale_range"):
        STModule(output_size=8, init=(1.0, 0.1, 0.0, 0.0), loc_size=16, scale_range=(0.2, 1.2))


def test_loc_norm_puts_a_batch_norm_after_every_conv():
    st = STModule(output_size=8, init=(1.0, 1.0, 0.0, 0.0), loc_size=16, loc_norm=True)
    kinds = [type(m).__name__ for m in st.localization]
    assert kinds.count("BatchNorm2d") == 4
    assert all(kinds[i + 1] == "BatchNorm2d" for i, k in enumerate(kinds) if k == "Conv2d")


def test_warm_start_loads_the_baselines_classifier(tmp_path):
    torch.manual_seed(0)
    baseline = build_model("baseline", CLASSIFIER)
    path = tmp_path / "model.pt"
    config = {"setting": "baseline", "classifier": CLASSIFIER}
    torch.save({"state_dict": baseline.state_dict(), "config": config}, path)
    torch.manual_seed(1)
    stn = build_model("stn", CLASSIFIER, STN_PARAMS)
    load_warm_start(stn, path)
    for name, value in baseline.state_dict().items():
        torch.testing.assert_close(stn.classifier.state_dict()[name], value)


def test_warm_start_names_a_missing_or_wrong_file(tmp_path):
    stn = build_model("stn", CLASSIFIER, STN_PARAMS)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: no trained baseline"):
        load_warm_start(stn, tmp_path / "missing.pt")
    path = tmp_path / "stn.pt"
    torch.save({"state_dict": stn.state_dict(), "config": {"setting": "stn"}}, path)
    with pytest.raises(ValueError, match=r"stn\.pt: holds a 'stn' model, not a baseline"):
        load_warm_start(stn, path)


def test_an_images_window_samples_the_same_pixels_in_any_batch():
    """k (samples averaged per output pixel) follows the sizes, not the batch's windows: a
    window of side 0.45 scored alone or beside one of side 0.9 gives the same pixels (with
    k from the batch's largest window they differed, and so did the image's score)."""
    torch.manual_seed(0)
    images = torch.rand(2, 1, 160, 160)
    windows = torch.tensor([[0.45, 0.45, 0.1, -0.2], [0.9, 0.9, 0.0, 0.0]])
    together = sample_window(images, windows, 80)
    alone = sample_window(images[:1], windows[:1], 80)
    assert torch.equal(together[:1], alone)
    # the whole image into half its side: the 2 x 2 mean of the source pixels
    whole = sample_window(images[:1], torch.tensor([[1.0, 1.0, 0.0, 0.0]]), 80)
    torch.testing.assert_close(whole, F.avg_pool2d(images[:1], 2))
