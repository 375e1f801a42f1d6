"""Export of a trained classifier (with its ST module) to ONNX, checked against PyTorch.

The ST module picks its antialiasing sample count k per axis with Python integers from
the batch's largest window (`models.STModule.forward`): an exporter would freeze the k of
the example batch into the graph. `PerImageSTModule` computes the same sampling with a
fixed-shape grid of K = ceil(input side / output side) sub-samples per output pixel and
axis, of which the first k (now a tensor, per image) carry weight 1/k and the rest 0.
For one image this is exactly what `STModule.forward` computes, so the exported model
scores every image as the pipeline's model scores it alone (as `cxrstn predict` does).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrstn.io import atomic_path
from cxrstn.models import STN, STModule
from cxrstn.train import load_model

OPSET = 18
"""ONNX opset: GridSample needs 16, Resize with antialiasing (the models' downscaling) 18."""

TOLERANCE = 1e-4
"""Largest accepted difference between ONNX Runtime's and PyTorch's scores at export."""


class PerImageSTModule(nn.Module):
    """A trained `STModule`'s forward pass for a fixed input side, with k chosen per image."""

    def __init__(self, st: STModule, input_size: int):
        super().__init__()
        self.st = st
        self.input_size = input_size
        sampled = min(input_size, st.sample_size or input_size)  # see STModule.sample_input
        self.ratio = sampled / st.output_size
        self.most = max(1, math.ceil(self.ratio - 1e-6))  # K: k never exceeds it

    def _axis(self, scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Grid coordinates (N x n*K) and sample weights (N x n*K) along one axis."""
        n, most = self.st.output_size, self.most
        span = scale.detach().abs().clamp(max=1.0) * self.ratio
        k = torch.clamp(torch.ceil(span.double() - 1e-6), min=1.0).to(scale.dtype)[:, None]
        output = torch.arange(n, dtype=scale.dtype, device=scale.device)
        sub = torch.arange(most, dtype=scale.dtype, device=scale.device)
        fine = output[None, :, None] * k[:, :, None] + torch.minimum(sub, k - 1)[:, None, :]
        base = (2 * fine + 1) / (n * k[:, :, None]) - 1  # affine_grid's pixel centres
        coords = scale[:, None, None] * base + shift[:, None, None]
        weights = (sub[None, :] < k).to(scale.dtype) / k
        weights = weights[:, None, :].expand(-1, n, -1)
        return coords.reshape(-1, n * most), weights.reshape(-1, n * most)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.st.sample_input(x)
        params = self.st.params(x)
        sx, sy, tx, ty = params.unbind(dim=1)
        gx, wx = self._axis(sx, tx)
        gy, wy = self._axis(sy, ty)
        batch, rows, cols = x.shape[0], gy.shape[1], gx.shape[1]
        grid = torch.stack(
            [gx[:, None, :].expand(batch, rows, cols), gy[:, :, None].expand(batch, rows, cols)],
            dim=-1,
        )
        sampled = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
        weighted = sampled * wy[:, None, :, None] * wx[:, None, None, :]
        n, most = self.st.output_size, self.most
        pooled = weighted.reshape(-1, x.shape[1], n, most, n, most).sum(dim=(3, 5))
        return pooled, params


class ScoringModel(nn.Module):
    """What the ONNX file computes: image N x 1 x S x S in [0, 1] -> score (and ST params)."""

    def __init__(self, model: nn.Module, input_size: int):
        super().__init__()
        if isinstance(model, STN):
            self.st = PerImageSTModule(model.st, input_size)
            self.classifier = model.classifier
        else:
            self.st = None
            self.classifier = model

    def forward(self, x: torch.Tensor):
        if self.st is None:
            return torch.sigmoid(self.classifier(x))
        transformed, params = self.st(x)
        return torch.sigmoid(self.classifier(transformed)), params


def output_names(model: nn.Module) -> list[str]:
    return ["score", "st_params"] if isinstance(model, STN) else ["score"]


def reference_scores(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """PyTorch scores of `images`, one image per forward pass (as `cxrstn predict` scores)."""
    with torch.no_grad():
        logits = torch.cat([model(image[None]) for image in images])
    return torch.sigmoid(logits.double()).numpy()


def check_images(size: int, count: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth random test images (N x 1 x size x size in [0, 1]) for the export check."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 1, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def export_onnx(
    model_path: str | os.PathLike, out_path: str | os.PathLike, opset: int = OPSET
) -> float:
    """Write the classifier of `model_path` (a `model.pt`) as ONNX, then check it.

    The ONNX model takes `image` (float32 N x 1 x S x S in [0, 1], S the model's
    `resize.size`, N free) and returns `score` (the sigmoid of the logit, N) and, for an
    STN, `st_params` (sx, sy, tx, ty, N x 4). ONNX Runtime must reproduce PyTorch's
    scores of a few test images within TOLERANCE, or nothing is written. Returns the
    largest difference.
    """
    import onnxruntime

    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    size = int(saved["config"]["size"])
    model = load_model(model_path)
    wrapper = ScoringModel(model, size).eval()
    example = torch.zeros(2, 1, size, size)
    with atomic_path(out_path) as tmp:
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=output_names(model),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        images = check_images(size)
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        onnx_scores = session.run(["score"], {"image": images.numpy()})[0]
        difference = float(np.abs(onnx_scores - reference_scores(model, images)).max())
        if not difference <= TOLERANCE:
            raise ValueError(
                f"{model_path}: ONNX Runtime's scores differ from PyTorch's by {difference:.2e} "
                f"(at most {TOLERANCE:.0e} accepted); nothing written"
            )
    return difference
