"""Where the ST module's per-image attention is lost: in the module, in the estimator, or in
the labels.

Four learners fit a fresh ST module on the same training images, and each is scored on the
same test images by how its windows frame the lung boxes (`roi.quality`):

- `fit_to_boxes`: the module is told each image's lung window (mean squared error). Its
  capacity: can the localization net map an image to its lungs at all?
- `reinforce` with `box_loss`: the estimator the STN trains with (`STN` with
  `reinforce_pairs`), each window scored by its distance to the image's lung window. Can
  REINFORCE learn a per-image window from a per-image signal within this budget?
- `reinforce` with `label_loss`: the same estimator, each window scored by a trained
  classifier's loss on the image's label, the classifier held fixed. What do the labels
  tell each window?
- `fit_equivariant`: the module trained by the equivariance term alone
  (`STN.equivariance_term`), with neither label nor box. Does a signal that needs no
  localisation labels make the window follow each image's lungs?

A diagnostic (it reads the lung boxes the STN never sees), not a training method;
`bench/stn_signal.py` runs it on the pipeline's data and docs/attention.md has the numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cxrstn.models import STN, STModule
from cxrstn.roi import quality, stn_window
from cxrstn.train import _param_groups, adam

WindowLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(windows N x 4, their images' rows in the training set, the classifier's logits on them)
-> one loss per window."""


def window_params(boxes) -> torch.Tensor:
    """The module's (sx, sy, tx, ty) that samples exactly each box (x0, y0, x1, y1 as
    fractions of the image): the inverse of `roi.stn_window`."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    return torch.stack([x1 - x0, y1 - y0, x0 + x1 - 1, y0 + y1 - 1], dim=1)


def framing(st: STModule, images: torch.Tensor, lungs) -> dict[str, float]:
    """How the module's windows on `images` frame their `lungs` (`roi.quality`), with the
    spread of its window's centre and height across the images."""
    st.eval()
    with torch.no_grad():
        params = st.params(st.sample_input(images)).numpy()
    windows = stn_window(*params.T)
    return quality(windows, lungs) | {
        "window_centre_std": float((windows[:, 1] + windows[:, 3]).std() / 2),
        "window_height_std": float((windows[:, 3] - windows[:, 1]).std()),
    }


def fit_to_boxes(
    model: STN, images: torch.Tensor, lungs, epochs: int, batch: int, stn: dict, seed: int = 0
) -> STN:
    """Train `model.st` alone to predict each image's lung window (mean squared error),
    with the STN's own Adam groups (`stn.lr`, `stn.loc_lr`)."""
    torch.manual_seed(seed)
    st, targets = model.st, window_params(lungs)
    images = st.sample_input(images)
    optimizer = adam(_module_groups(model, stn), torch.device("cpu"))
    for _ in range(epochs):
        st.train()
        for rows in torch.randperm(len(images)).split(batch):
            loss = F.mse_loss(st.params(images[rows]), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


def fit_equivariant(
    model: STN, images: torch.Tensor, epochs: int, batch: int, stn: dict, seed: int = 0
) -> STN:
    """Train `model.st` alone by the equivariance term (`STN.equivariance_term`, views up to
    `stn.equivariance_zoom`), with the STN's own Adam groups: no label, no lung box."""
    torch.manual_seed(seed)
    optimizer = adam(_module_groups(model, stn), torch.device("cpu"))
    for _ in range(epochs):
        model.st.train()
        for rows in torch.randperm(len(images)).split(batch):
            loss = model.equivariance_term(images[rows], stn["equivariance_zoom"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


def _module_groups(model: STN, stn: dict) -> list[dict]:
    """The STN's Adam groups of its ST module (the first group is the classifier's)."""
    return _param_groups(model, 0.0, stn)[1:]


def box_loss(lungs) -> WindowLoss:
    """Each window's squared distance, in (sx, sy, tx, ty), to its image's lung window."""
    targets = window_params(lungs)
    return lambda windows, rows, logits: ((windows - targets[rows]) ** 2).sum(dim=1)


def label_loss(labels) -> WindowLoss:
    """Each window's binary cross-entropy on its image's label, under the classifier."""
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    return lambda windows, rows, logits: F.binary_cross_entropy_with_logits(
        logits, labels[rows], reduction="none"
    )


def reinforce(
    model: STN,
    images: torch.Tensor,
    window_loss: WindowLoss,
    epochs: int,
    batch: int,
    stn: dict,
    seed: int = 0,
) -> STN:
    """Train `model.st` alone by REINFORCE with mirrored pairs, the STN's own estimator
    (`STN.forward`, `STN.reinforce_term`), each window scored by `window_loss`; the
    classifier stays in eval mode and unchanged. Learning rates: `stn.lr` and `stn.loc_lr`."""
    if model.reinforce_sigma is None or not model.reinforce_pairs:
        raise ValueError("reinforce needs an STN with reinforce_sigma and reinforce_pairs")
    torch.manual_seed(seed)
    images = model.st.sample_input(images)
    optimizer = adam(_module_groups(model, stn), torch.device("cpu"))
    for param in model.classifier.parameters():
        param.requires_grad_(False)
    for _ in range(epochs):
        model.train()
        model.classifier.eval()
        for rows in torch.randperm(len(images)).split(batch):
            logits = model(images[rows])  # each image through its two mirrored windows
            with torch.no_grad():
                losses = window_loss(model.last_windows, torch.cat([rows, rows]), logits)
            optimizer.zero_grad(set_to_none=True)
            model.reinforce_term(losses).backward()
            optimizer.step()
    return model
