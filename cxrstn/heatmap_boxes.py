"""Does the trained baseline's own heatmap give a per-image lung box? (issue #33 item 2)

A pseudo-box for the ST module (`stn.pseudo_box_weight`, not built) would be worth
building only if a box read off the baseline VGG's heatmap follows each image's lungs. This
module makes those boxes and scores them against the known lung boxes (`roi.quality`):

- the heatmaps, at the output of the last conv (its ReLU) of a VGG block: Grad-CAM of the
  abnormal logit (Selvaraju et al. 2017: the block's activations weighted by the spatially
  averaged gradient of the logit, then a ReLU); Grad-CAM of the predicted class (the logit
  or its negative; the paper maps "each of the predicted classes"); and the class-agnostic
  sum of the activations;
- each map upsampled to the classifier's input, thresholded at a share of its maximum,
  and boxed two ways: the largest connected component (the paper's localisation rule) or
  every pixel above the threshold.

A diagnostic that reads the lung boxes, not a training method; `bench/heatmap_boxes.py`
runs it on the pipeline's baselines and docs/attention.md has the numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from cxrstn.models import Classifier
from cxrstn.roi import quality

MAPS = ("gradcam", "gradcam_predicted", "activation")
"""Grad-CAM of the abnormal logit, Grad-CAM of the predicted class, summed activations."""
RULES = ("largest", "all")
"""The box of the largest connected component above the threshold, or of every pixel."""
BLOCKS = (3, 4, 5)
THRESHOLDS = (0.15, 0.2, 0.3, 0.5, 0.7)
"""Shares of the map's maximum; 0.15 is the Grad-CAM paper's localisation threshold."""


def block_output(vgg: nn.Module, block: int) -> nn.Module:
    """The ReLU after the last conv of VGG block `block` (1-5): the layer before its
    max-pool, whose output is the block's feature map (with or without batch norm)."""
    layers = list(vgg.features)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    if not 1 <= block <= len(pools):
        raise ValueError(f"block must be in 1..{len(pools)}, got {block}")
    last = layers[pools[block - 1] - 1]
    if not isinstance(last, nn.ReLU):
        raise ValueError(f"block {block} does not end in a ReLU: {last}")
    return last


def grad_cam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (N x h x w) from a layer's activations and the score's gradient with
    respect to them (N x C x h x w each): ReLU(sum_k mean_ij(dy/dA^k_ij) A^k)."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


def heatmaps(
    model: Classifier, images: torch.Tensor, block: int, side: int | None = None
) -> dict[str, torch.Tensor]:
    """Each of `MAPS` for `images` (N x 1 x S x S, as the pipeline feeds them), from
    `block`'s feature map, upsampled bilinearly to `side` (the classifier's input side):
    N x side x side each, >= 0. The model's weights are left untouched."""
    captured = {}
    hook = block_output(model.vgg, block).register_forward_hook(
        lambda module, args, output: captured.__setitem__("a", output)
    )
    try:
        with torch.enable_grad():
            logits = model(images)
            (grads,) = torch.autograd.grad(logits.sum(), captured["a"])
    finally:
        hook.remove()
    acts = captured["a"].detach()
    sign = torch.where(logits.detach() >= 0, 1.0, -1.0)[:, None, None, None]
    maps = {
        "gradcam": grad_cam(acts, grads),
        "gradcam_predicted": grad_cam(acts, sign * grads),
        "activation": acts.sum(dim=1),
    }
    side = side or model.input_size
    return {name: _upsampled(m, side) for name, m in maps.items()}


def _upsampled(maps: torch.Tensor, side: int) -> torch.Tensor:
    """N x h x w maps bilinearly resized to N x side x side, cell centres kept in place."""
    resized = F.interpolate(maps[:, None], size=(side, side), mode="bilinear", align_corners=False)
    return resized[:, 0]


def map_box(heatmap: np.ndarray, threshold: float, rule: str) -> np.ndarray | None:
    """The box (x0, y0, x1, y1, fractions of the image, x1 and y1 exclusive) of the
    pixels at or above `threshold` x the map's maximum: of the largest 4-connected
    component (`largest`) or of all of them (`all`). None for a map with no positive pixel."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    heatmap = np.asarray(heatmap, dtype=np.float64)
    peak = heatmap.max()
    if not peak > 0:
        return None
    mask = heatmap >= threshold * peak
    if rule == "largest":
        components, count = ndimage.label(mask)
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        mask = components == 1 + int(np.argmax(sizes))
    rows, cols = np.nonzero(mask)
    h, w = heatmap.shape
    return np.array([cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h])


def map_boxes(maps, threshold: float, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """`map_box` of each map (N x H x W): N x 4 boxes, the whole image where a map is empty,
    and which ones were empty."""
    boxes = [map_box(m, threshold, rule) for m in np.asarray(maps)]
    empty = np.array([b is None for b in boxes], dtype=bool)
    whole = np.array([0.0, 0.0, 1.0, 1.0])
    return np.array([whole if b is None else b for b in boxes]).reshape(-1, 4), empty


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def score(boxes, lungs) -> dict[str, float]:
    """`roi.quality` of `boxes` against `lungs`, with the r of the horizontal centre and of
    the width, which `quality` leaves out (it scores vertical framing)."""
    boxes, lungs = np.asarray(boxes, dtype=np.float64), np.asarray(lungs, dtype=np.float64)
    return quality(boxes, lungs) | {
        "r_x_centre": _pearson(boxes[:, 0] + boxes[:, 2], lungs[:, 0] + lungs[:, 2]),
        "r_width": _pearson(boxes[:, 2] - boxes[:, 0], lungs[:, 2] - lungs[:, 0]),
    }


def measure(
    model: Classifier,
    images: torch.Tensor,
    lungs,
    blocks=BLOCKS,
    thresholds=THRESHOLDS,
    rules=RULES,
    batch: int = 64,
) -> pd.DataFrame:
    """One row per variant (map, block, threshold, rule): its boxes' `score` against the
    images' `lungs` and the share of images whose map was empty (boxed as the whole image)."""
    rows = []
    for block in blocks:
        parts = [heatmaps(model, chunk, block) for chunk in images.split(batch)]
        for name in MAPS:
            maps = torch.cat([part[name] for part in parts]).numpy()
            for threshold in thresholds:
                for rule in rules:
                    boxes, empty = map_boxes(maps, threshold, rule)
                    rows.append(
                        {"map": name, "block": block, "threshold": threshold, "rule": rule}
                        | score(boxes, lungs)
                        | {"empty": float(empty.mean())}
                    )
    return pd.DataFrame(rows)
