"""The three classifiers: VGG16 on the whole image, on YOLO crops, and behind an ST module.

Every model takes the stored S x S grayscale image as a float tensor N x 1 x S x S in
[0, 1] and returns one logit per image (its sigmoid is the abnormality score). The model
itself brings the image to the classifier's input size, so that the ST module can sample
its zoomed window from the full resolution instead of from an already shrunk copy.

By default the first convolution takes one channel. Repeating a gray image to three
channels gives the same result as one channel whose kernel is the sum of the three, at
three times the first layer's cost; a three-channel (e.g. ImageNet) state dict is converted
that way. `classifier.in_channels: 3` keeps torchvision's three-channel VGG16 and repeats
the gray image, as the authors' code does.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import VGG, cfgs, make_layers

from cxrstn.settings import SETTINGS, ST_SETTINGS

# Fixed normalisation of the [0, 1] pixels, the same for every setting and for prediction.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


NORMS = ("none", "batch")
"""`classifier.norm`: VGG16 as published (none), or torchvision's vgg16_bn topology (batch)."""


def vgg16_single(
    width: float = 1.0, dropout: float = 0.5, in_channels: int = 1, norm: str = "none"
) -> VGG:
    """torchvision's VGG16 with every width scaled, `in_channels` inputs and one output.

    `dropout` is the rate of the head's two dropout layers (torchvision: 0.5); a narrow
    head on a small data set learns much faster with less. `norm: batch` puts a batch norm
    after every convolution (torchvision's vgg16_bn). The model is built on the meta
    device and initialised once at the end, so the full-width layers that are replaced
    are never allocated.
    """
    if norm not in NORMS:
        raise ValueError(f"classifier.norm must be one of {', '.join(NORMS)}, got {norm!r}")
    cfg = [v if v == "M" else _scaled(v, width) for v in cfgs["D"]]
    hidden = _scaled(4096, width)
    with torch.device("meta"):
        model = VGG(make_layers(cfg, batch_norm=norm == "batch"), num_classes=1, init_weights=False)
        model.features[0] = nn.Conv2d(in_channels, cfg[0], kernel_size=3, padding=1)
        model.classifier = nn.Sequential(
            nn.Linear(cfg[-2] * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, 1),
        )
    model = model.to_empty(device="cpu")
    # torchvision's VGG initialisation, with the dense layers' std scaled by 1/sqrt(width):
    # each dense layer then passes on the signal variance of its full-width counterpart
    # (fan_in x std^2); a plain std of 0.01 would shrink a width-1/8 net's initial logits
    # about 20-fold. At width 1 it is exactly torchvision's initialisation.
    linear_std = 0.01 / math.sqrt(width)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    return model


def load_vgg_weights(model: VGG, path: str | os.PathLike) -> None:
    """Load a local VGG16 state dict; a 3-channel first conv is summed for a 1-channel model.

    Layers whose shape differs (e.g. a 1000-class last layer) keep their initialisation.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    first = state.get("features.0.weight")
    if first is not None and first.shape[1] == 3 and model.features[0].in_channels == 1:
        state["features.0.weight"] = first.sum(dim=1, keepdim=True)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the VGG16 of this width")
    model.load_state_dict(usable, strict=False)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - PIXEL_MEAN) / PIXEL_STD


def to_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of N x C x H x W images to size x size (no-op if equal)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


IDENTITY = (1.0, 1.0, 0.0, 0.0)
"""(sx, sy, tx, ty) of the whole-image window: what the baseline and yolo settings see."""


def sample_window(x: torch.Tensor, params: torch.Tensor, output_size: int) -> torch.Tensor:
    """The one resampling from a source copy to the classifier's input, for every setting.

    `params` (N x 4: sx, sy, tx, ty, in units of the half-side) place a window on each
    image of `x` (N x C x S x S): the identity for the whole image (baseline, and yolo,
    whose store holds the crops), the ST module's prediction for the STN. The window is
    sampled bilinearly into output_size x output_size pixels, k x k samples per output
    pixel averaged, where k is the number of source pixels an output pixel spans when the
    window is the whole image (the whole 160 px copy into 80 px: k = 2): shrinking then
    does not alias, and a zoomed window is merely sampled more finely than it needs. k
    depends on the sizes alone, never on the windows, so an image gets the same pixels in
    any batch (a k taken from the batch's largest window gave an image of side 0.5 other
    scores in a batch whose largest window was 0.6), whichever setting asks, and in the
    traced ONNX graph.
    """
    theta = STModule.theta(params).to(x.dtype)
    k = max(1, math.ceil(x.shape[-1] / output_size - 1e-6))
    size = (x.shape[0], x.shape[1], output_size * k, output_size * k)
    grid = F.affine_grid(theta, size, align_corners=False)
    sampled = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    return F.avg_pool2d(sampled, k) if k > 1 else sampled


def random_windows(n: int, sides: tuple[float, float], device: torch.device | None = None):
    """`n` windows (sx, sy, tx, ty): each side drawn uniformly from `sides` (fractions of the
    image's), the window placed uniformly anywhere on the image, wholly inside it. Drawn
    from torch's global generator, which the training run seeds and checkpoints."""
    low, high = sides
    scales = low + (high - low) * torch.rand(n, 2)
    shifts = (1 - scales) * (2 * torch.rand(n, 2) - 1)
    return torch.cat([scales, shifts], dim=1).to(device)


def random_views(n: int, largest_zoom: float, device: torch.device | None = None) -> torch.Tensor:
    """`n` known random views of an image, as windows (hx, hy, bx, by): per axis a
    half-size h with 1/h log-uniform in [1, largest_zoom], and a centre b anywhere that
    keeps the view on the image (|b| <= 1 - h). Drawn from torch's global generator, which
    the training run seeds and checkpoints.

    The views do not depend on the window: views chosen to keep each image's window in
    sight let a window pinned to a corner of the image meet the equivariance term exactly
    (every such view shares that corner), and it did, on 2 of 4 seeds (docs/attention.md).
    """
    halves = torch.exp(-math.log(largest_zoom) * torch.rand(n, 2))
    centres = (1 - halves) * (2 * torch.rand(n, 2) - 1)
    return torch.cat([halves, centres], dim=1).to(device)


def window_in_view(windows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Windows (sx, sy, tx, ty) of an image, in the coordinates of views (hx, hy, bx, by) of
    it: a window of centre c and half-side s is, in a view of centre b and half-side h, the
    window of centre (c - b) / h and half-side s / h."""
    halves, centres = views[:, :2], views[:, 2:]
    return torch.cat([windows[:, :2] / halves, (windows[:, 2:] - centres) / halves], dim=1)


def equivariance_loss(predicted: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """How far windows predicted on views are from the windows of the whole images carried
    into those views (`window_in_view`): the squared distance of their centres plus the
    squared log-ratio of their sides, summed over both axes, averaged over the images.
    Sides are compared by their log, so that a window twice too large costs as much as
    one half too small, whatever its size."""
    scales = predicted[:, :2].abs().clamp_min(1e-3), expected[:, :2].abs().clamp_min(1e-3)
    sides = (scales[0].log() - scales[1].log()).square().sum(dim=1)
    centres = (predicted[:, 2:] - expected[:, 2:]).square().sum(dim=1)
    return (sides + centres).mean()


@torch.no_grad()
def equivariance_slope(
    st: nn.Module, x: torch.Tensor, half: float = 0.8, shift: float = 0.2
) -> float:
    """Whether a module's window follows what it sees: each image of `x` is shown through a
    centred view (half-side `half`) and through views moved by -`shift` and +`shift` along
    each axis, and the shift of the predicted window's centre (in the view's coordinates)
    is regressed, through the origin, on the shift the image's content made there
    (-b / h). 1: the window moves with the content; 0: it stays where it was in the view,
    one window for every view."""
    x = st.sample_input(x)
    applied, predicted = [], []
    for axis in (0, 1):
        centres = []
        for offset in (-shift, 0.0, shift):
            view = x.new_tensor([half, half, 0.0, 0.0]).repeat(len(x), 1)
            view[:, 2 + axis] = offset
            centres.append(st.params(sample_window(x, view, x.shape[-1]))[:, 2 + axis])
        for moved, offset in ((centres[0], -shift), (centres[2], shift)):
            applied.append(torch.full_like(moved, -offset / half))
            predicted.append(moved - centres[1])
    a, p = torch.cat(applied).double(), torch.cat(predicted).double()
    return float((a * p).sum() / (a * a).sum())


def source_copy(x: torch.Tensor, sample_size: int | None) -> torch.Tensor:
    """The copy every setting's window is sampled from: `x` shrunk to `sample_size` if larger
    (`classifier.sample_size`; None: the stored image). The data loader makes the same copy
    before augmenting, so that all settings augment at the same resolution."""
    if sample_size is None or x.shape[-1] <= sample_size:
        return x
    return to_size(x, sample_size)


class Classifier(nn.Module):
    """VGG16 behind the whole-image window: the baseline and yolo model, and the STN's
    classifier (which gets the ST module's window, already at `input_size`).

    A larger input is first brought to the source copy (`sample_size`), then sampled by
    `sample_window` with the identity window, exactly as an STN held at the identity does.
    """

    def __init__(
        self,
        width: float = 1.0,
        input_size: int = 512,
        dropout: float = 0.5,
        in_channels: int = 1,
        norm: str = "none",
        sample_size: int | None = None,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"classifier.in_channels must be 1 or 3, got {in_channels}")
        if sample_size is not None and sample_size < input_size:
            raise ValueError(
                f"classifier.sample_size ({sample_size}) must be at least classifier.input_size "
                f"({input_size})"
            )
        self.input_size = input_size
        self.sample_size = sample_size
        self.in_channels = in_channels
        self.vgg = vgg16_single(width, dropout, in_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = source_copy(x, self.sample_size)
            identity = x.new_tensor(IDENTITY).expand(x.shape[0], 4)
            x = sample_window(x, identity, self.input_size)
        x = normalise(x)
        return self.vgg(x.expand(-1, self.in_channels, -1, -1)).squeeze(1)


def compact_localization(
    loc_channels: tuple[int, ...], loc_size: int, norm: bool = False
) -> tuple[nn.Sequential, int]:
    """Four conv3x3-ReLU-maxpool blocks on a `loc_size` copy; returns (net, flat outputs).

    With `norm`, each conv is followed by batch normalisation: the features then differ
    between images on the scale of their mean, so the last layer's readout of where the
    lungs lie learns as fast as the shared window does.
    """
    if len(loc_channels) != 4:
        raise ValueError(f"the localization net has four conv blocks, got {loc_channels}")
    if loc_size % 16:
        raise ValueError(f"stn loc_size must be a multiple of 16, got {loc_size}")
    blocks: list[nn.Module] = []
    in_channels = 1
    for channels in loc_channels:
        blocks += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)]
        blocks += [nn.BatchNorm2d(channels)] if norm else []
        blocks += [nn.ReLU(True), nn.MaxPool2d(2)]
        in_channels = channels
    return nn.Sequential(*blocks), in_channels * (loc_size // 16) ** 2


AUTHORS_KERNELS = (7, 5, 5, 5)
AUTHORS_CHANNELS = (16, 32, 64, 128)
AUTHORS_HIDDEN = 32


def authors_localization(in_channels: int, input_size: int) -> tuple[nn.Sequential, int]:
    """The authors' localization net: conv (7, 5, 5, 5 px; 16, 32, 64, 128 channels; no
    padding), each followed by 2x2 max-pool then ReLU; returns (net, flat outputs).

    Their first dense layer has a fixed 18,432 = 128 x 12 x 12 inputs: what this net gives
    for a 256 px input, not for the 512 px images of the paper. Here the flat size follows
    from `input_size` (28 x 28 x 128 = 100,352 at 512 px), so the net works at any size.
    """
    blocks: list[nn.Module] = []
    side, channels_in = input_size, in_channels
    for kernel, channels in zip(AUTHORS_KERNELS, AUTHORS_CHANNELS, strict=True):
        blocks += [nn.Conv2d(channels_in, channels, kernel), nn.MaxPool2d(2, 2), nn.ReLU(True)]
        side, channels_in = (side - kernel + 1) // 2, channels
        if side < 1:
            raise ValueError(
                f"the authors' localization net needs a larger input than {input_size} px"
            )
    return nn.Sequential(*blocks), channels_in * side * side


class STModule(nn.Module):
    """Attention by scaling and translation only: theta = [[sx, 0, tx], [0, sy, ty]].

    The localization net (four conv blocks, a dense layer with ReLU and a dense layer
    giving sx, sy, tx, ty) is either `compact` (3x3 convs on the image shrunk to
    `loc_size`) or `authors` (their net, on the image at the classifier's input size);
    the window is sampled by `sample_window`, the very function that gives the other
    settings their whole-image input, into `output_size` pixels. The last layer starts
    with zero weights and the initial parameters as bias, as in the PyTorch STN tutorial
    and the authors' code.

    `sample_size` (`classifier.sample_size`, shared by every setting; None: the input as
    it comes) first shrinks a larger input to that side: a window can then zoom in by
    sample_size / output_size (2x for 160 px into 80 px) at full detail, while augmenting
    and sampling cost a fraction of the 512 px image's.
    """

    def __init__(
        self,
        output_size: int,
        init: tuple[float, float, float, float] = (1.0, 0.1, 0.0, 0.0),
        loc_size: int = 64,
        loc_channels: tuple[int, ...] = (8, 16, 32, 32),
        loc_hidden: int = 64,
        loc_net: str = "compact",
        in_channels: int = 1,
        loc_norm: bool = False,
        scale_range: tuple[float, float] | None = None,
        sample_size: int | None = None,
        keep_inside: bool = False,
    ):
        super().__init__()
        self.output_size = output_size
        if sample_size is not None and sample_size < output_size:
            raise ValueError(
                f"classifier.sample_size ({sample_size}) must be at least the classifier's "
                f"input size ({output_size})"
            )
        self.sample_size = sample_size
        if scale_range is not None:
            low, high = scale_range
            if not 0 < low < high or not all(low < s < high for s in init[:2]):
                raise ValueError(
                    f"stn.scale_range must be 0 < low < high around sx_init and sy_init, "
                    f"got {list(scale_range)} for {list(init[:2])}"
                )
            if not all(-1 < t < 1 for t in init[2:]):
                raise ValueError("with stn.scale_range, tx_init and ty_init must lie in (-1, 1)")
        self.scale_range = scale_range
        if keep_inside:
            if scale_range is None or scale_range[1] > 1:
                raise ValueError("stn.keep_inside needs stn.scale_range with high <= 1")
            if not all(abs(t) < 1 - s for s, t in zip(init[:2], init[2:], strict=True)):
                raise ValueError("with stn.keep_inside, |t_init| must be below 1 - s_init")
        self.keep_inside = keep_inside
        if loc_net == "compact":
            self.loc_size, self.loc_channels = loc_size, 1
            self.localization, flat = compact_localization(loc_channels, loc_size, loc_norm)
        elif loc_net == "authors":
            self.loc_size, self.loc_channels = output_size, in_channels
            self.localization, flat = authors_localization(in_channels, output_size)
            loc_hidden = AUTHORS_HIDDEN
        else:
            raise ValueError(f"stn.loc_net must be compact or authors, got {loc_net!r}")
        self.regressor = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, loc_hidden),
            nn.ReLU(True),
            nn.Linear(loc_hidden, 4),
        )
        final = self.regressor[-1]
        nn.init.zeros_(final.weight)
        with torch.no_grad():
            final.bias.copy_(self.raw(torch.tensor(init, dtype=torch.float64)).float())

    def raw(self, params: torch.Tensor) -> torch.Tensor:
        """The last layer's output that `bounded` maps to `params` (its inverse)."""
        if self.scale_range is None:
            return params
        low, high = self.scale_range
        scales = torch.logit((params[..., :2] - low) / (high - low))
        shifts = params[..., 2:] / (1 - params[..., :2]) if self.keep_inside else params[..., 2:]
        return torch.cat([scales, torch.atanh(shifts)], dim=-1)

    def bounded(self, raw: torch.Tensor) -> torch.Tensor:
        """(sx, sy, tx, ty) from the last layer's output: as they are (the paper), or with
        `scale_range`, scales squashed into (low, high) and translations into (-1, 1), so
        that a large ST learning rate cannot throw the window off the image (where the
        gradient vanishes). With `keep_inside` a translation is (1 - s) tanh(.), so the
        whole window stays on the image: with tanh alone a small window can still sit half
        off it, in a corner (measured on the toy task of `cxrstn.toy`)."""
        if self.scale_range is None:
            return raw
        low, high = self.scale_range
        scales = low + (high - low) * torch.sigmoid(raw[..., :2])
        shifts = torch.tanh(raw[..., 2:])
        return torch.cat([scales, (1 - scales) * shifts if self.keep_inside else shifts], dim=-1)

    def clip(self, params: torch.Tensor) -> torch.Tensor:
        """`params` moved into the ranges `bounded` gives (scales into `scale_range`, shifts
        into (-1, 1), or inside the image with `keep_inside`); as they are without bounds."""
        if self.scale_range is None:
            return params
        scales = params[..., :2].clamp(*self.scale_range)
        limit = 1 - scales if self.keep_inside else torch.ones_like(scales)
        shifts = torch.maximum(torch.minimum(params[..., 2:], limit), -limit)
        return torch.cat([scales, shifts], dim=-1)

    def params(self, x: torch.Tensor, label_grad: str = "module") -> torch.Tensor:
        """Predict (sx, sy, tx, ty) per image, N x 4. `label_grad` (`LABEL_GRADS`) says what
        a loss on them trains: the whole module, only the last layer's bias (the part of the
        window that is the same for every image), or nothing."""
        small = normalise(to_size(x, self.loc_size)).expand(-1, self.loc_channels, -1, -1)
        raw = self.regressor(self.localization(small))
        if label_grad == "bias":
            bias = self.regressor[-1].bias
            raw = raw.detach() + (bias - bias.detach())
        elif label_grad == "none":
            raw = raw.detach()
        return self.bounded(raw)

    @staticmethod
    def theta(params: torch.Tensor) -> torch.Tensor:
        sx, sy, tx, ty = params.unbind(dim=1)
        zero = torch.zeros_like(sx)
        return torch.stack([sx, zero, tx, zero, sy, ty], dim=1).view(-1, 2, 3)

    def sample_input(self, x: torch.Tensor) -> torch.Tensor:
        """The image the window is sampled from: `x` shrunk to `sample_size` if larger."""
        return source_copy(x, self.sample_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the transformed image (N x 1 x output_size^2, in [0, 1]) and (sx, sy, tx, ty)."""
        x = self.sample_input(x)
        params = self.params(x)
        return sample_window(x, params, self.output_size), params


LABEL_GRADS = ("module", "bias", "none")
"""`stn.label_grad`: what the classification loss trains in the ST module: all of it (the
paper: end to end), or only the last layer's bias, the window shared by every image (not
in the paper), so that what differs between images is learnt from the equivariance term
alone (docs/attention.md)."""


class STN(nn.Module):
    """ST module followed by the classifier, trained end to end from image-level labels.

    By default the window learns through the sampler's gradient (the paper). With
    `reinforce_sigma` = (sigma of the scales, sigma of the shifts), training instead samples
    each image's window around the module's prediction with Gaussian noise and the module
    learns from how the loss changes with the noise (`reinforce_term`; REINFORCE, as the
    recurrent attention model of Mnih et al. 2014 trains its glimpses; not in the paper):
    on the toy task the sampler's gradient points towards the target no better than chance
    (docs/attention.md). With `reinforce_pairs` each training image goes through two
    mirrored windows (prediction + noise, prediction - noise), and the batch doubles.
    Evaluation always uses the predicted window itself.
    """

    def __init__(
        self,
        classifier: Classifier,
        st: STModule,
        reinforce_sigma: tuple[float, float] | None = None,
        reinforce_pairs: bool = False,
        label_grad: str = "module",
    ):
        super().__init__()
        if label_grad not in LABEL_GRADS:
            raise ValueError(
                f"stn.label_grad must be one of {', '.join(LABEL_GRADS)}, got {label_grad!r}"
            )
        self.classifier = classifier
        self.st = st
        self.reinforce_sigma = reinforce_sigma
        self.reinforce_pairs = reinforce_pairs
        self.label_grad = label_grad
        # (sx, sy, tx, ty) of the last batch, still in the graph: a loss term on the window
        # (the apex penalty, the REINFORCE term) back-propagates through it
        self.last_params: torch.Tensor | None = None
        self.last_noise: torch.Tensor | None = None  # the last training batch's noise / sigma^2
        self.last_windows: torch.Tensor | None = None  # the windows the classifier last saw

    def forward(self, x: torch.Tensor, windows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits through the module's windows, or through `windows` (N x 4) when given:
        the warm-up's random windows (`stn.warmup_sides`), which the module does not see."""
        x = self.st.sample_input(x)
        if windows is not None:
            self.last_params, self.last_noise, self.last_windows = windows, None, windows
            return self.classifier(sample_window(x, windows, self.st.output_size))
        params = self.st.params(x, label_grad=self.label_grad)
        self.last_params, self.last_noise, window = params, None, params
        if self.training and self.reinforce_sigma is not None:
            sigma_s, sigma_t = self.reinforce_sigma
            sigma = params.new_tensor([sigma_s, sigma_s, sigma_t, sigma_t])
            noise = torch.randn_like(params) * sigma
            if self.reinforce_pairs:  # each image twice, through mirrored windows
                x, noise = torch.cat([x, x]), torch.cat([noise, -noise])
                params = self.last_params = torch.cat([params, params])
            window = self.st.clip(params.detach() + noise)
            self.last_noise = noise / sigma**2
        self.last_windows = window
        return self.classifier(sample_window(x, window, self.st.output_size))

    def equivariance_term(self, x: torch.Tensor, largest_zoom: float) -> torch.Tensor:
        """A loss that is zero only when the module's window follows the image: each image
        of `x` is also shown to the module through a random view of it (`random_views`,
        sampled by `sample_window`, the same sampler as every window), and the window it
        predicts there is compared with its window on the whole image, carried into that
        view (`equivariance_loss`). A window that is the same for every image cannot meet
        it, whatever the label says (the equivariance constraint of SEAM, Wang et al. 2020,
        and Thewlis et al. 2017, applied to the window; not in the paper). Only the
        localization net sees the views; the classifier never does."""
        x = self.st.sample_input(x)
        views = random_views(len(x), largest_zoom, x.device)
        seen = sample_window(x, views, x.shape[-1])
        return equivariance_loss(self.st.params(seen), window_in_view(self.st.params(x), views))

    def reinforce_term(self, losses: torch.Tensor) -> torch.Tensor | float:
        """The surrogate whose gradient is the REINFORCE estimate of d mean(loss) / d window
        for the last training batch (`losses`: one per window): each window's noise, weighted
        by how much its loss exceeds the batch's mean, or with `reinforce_pairs` the mean of
        its image's two losses. 0 without `reinforce_sigma`."""
        if self.last_noise is None:
            return 0.0
        if self.reinforce_pairs:  # each image's own mean: only its window's effect remains
            baseline = losses.view(2, -1).mean(dim=0).repeat(2)
        else:
            baseline = losses.mean()
        advantage = (losses - baseline).detach()[:, None]
        return (advantage * self.last_noise * self.last_params).sum(dim=1).mean()


def build_model(setting: str, classifier: dict, stn: dict | None = None) -> nn.Module:
    """The model of `setting` (`SETTINGS`) from the `classifier` params and, for an STN
    setting, its ST module's params (`stn`: the section of the setting's own name).

    The classifier is built first, so that with the same seed all settings start from the
    same classifier weights.
    """
    if classifier["arch"] != "vgg16":
        raise ValueError(f"classifier.arch must be vgg16, got {classifier['arch']!r}")
    in_channels = classifier.get("in_channels", 1)
    model = Classifier(
        classifier["width"],
        classifier["input_size"],
        classifier["dropout"],
        in_channels,
        classifier.get("norm", "none"),
        classifier.get("sample_size"),
    )
    if classifier.get("weights"):
        load_vgg_weights(model.vgg, classifier["weights"])
    if setting in ("baseline", "yolo"):
        return model
    if setting not in ST_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    if stn is None:
        raise ValueError(f"the {setting} setting needs its ST module's params")
    # The ST module draws its initial weights from a fork of the RNG, so that after
    # build_model every setting continues the same random stream (dropout, augmentation).
    with torch.random.fork_rng(devices=[]):
        st = STModule(
            output_size=classifier["input_size"],
            init=(stn["sx_init"], stn["sy_init"], stn["tx_init"], stn["ty_init"]),
            loc_size=stn["loc_size"],
            loc_channels=tuple(stn["loc_channels"]),
            loc_hidden=stn["loc_hidden"],
            loc_net=stn.get("loc_net", "compact"),
            in_channels=in_channels,
            loc_norm=stn.get("loc_norm", False),
            scale_range=tuple(stn["scale_range"]) if stn.get("scale_range") else None,
            sample_size=classifier.get("sample_size"),
            keep_inside=stn.get("keep_inside", False),
        )
    sigma = stn.get("reinforce_sigma")
    return STN(
        model,
        st,
        tuple(sigma) if sigma else None,
        stn.get("reinforce_pairs", False),
        stn.get("label_grad", "module"),
    )


def load_warm_start(model: STN, path: str | os.PathLike) -> None:
    """Start an STN's classifier from a trained baseline's `model.pt` (`stn.warm_start`).

    The baseline is the classifier trained on the identity window, the STN's starting
    window: with its weights the classification loss tells the ST module from the first
    step which part of the image helps, instead of after the epochs a classifier from
    scratch needs before it learns anything.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no trained baseline to warm-start the STN's classifier from "
            "(stn.warm_start: baseline); train the baseline of this fold first"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved.get("config") or {}
    if config.get("setting") != "baseline":
        raise ValueError(f"{path}: holds a {config.get('setting')!r} model, not a baseline")
    if config["classifier"]["input_size"] != model.classifier.input_size:
        raise ValueError(
            f"{path}: its classifier takes {config['classifier']['input_size']} px, "
            f"this one {model.classifier.input_size} px"
        )
    try:
        model.classifier.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(f"{path}: its classifier does not fit this one: {first}") from None


def gflops(module: nn.Module, example: torch.Tensor) -> float:
    """Forward GFLOPs of `module` on `example` (convolutions and matmuls; FLOPs = 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example)
    module.train(was_training)
    return counter.get_total_flops() / 1e9
