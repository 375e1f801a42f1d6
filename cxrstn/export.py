"""Export of a trained classifier (with its ST module) to ONNX, checked against PyTorch.

The ST module's window is sampled with a number of sub-samples per output pixel that
depends on the sizes alone (`models.sample_window`), so the traced graph computes for
every image what the pipeline's model computes, whatever the batch: the exported model
scores each image as `cxrstn predict` scores it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrstn.io import atomic_path
from cxrstn.models import STN
from cxrstn.train import load_model

OPSET = 18
"""ONNX opset: GridSample needs 16, Resize with antialiasing (the models' downscaling) 18."""

TOLERANCE = 1e-4
"""Largest accepted difference between ONNX Runtime's and PyTorch's scores at export."""


class ScoringModel(nn.Module):
    """What the ONNX file computes: image N x 1 x S x S in [0, 1] -> score (and ST params)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if isinstance(model, STN):
            self.st, self.classifier = model.st, model.classifier
        else:
            self.st, self.classifier = None, model

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
    wrapper = ScoringModel(model).eval()
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
