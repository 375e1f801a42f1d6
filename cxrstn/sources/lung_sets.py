"""The thorax detector's training images: every lung-mask set the `data.*` params name."""

from __future__ import annotations

import os

from cxrstn.sources import LungSample
from cxrstn.sources import jsrt as jsrt_source
from cxrstn.sources import montgomery as montgomery_source
from cxrstn.sources import shenzhen as shenzhen_source


def lung_samples(
    jsrt: str | os.PathLike | None = None,
    scr: str | os.PathLike | None = None,
    montgomery: str | os.PathLike | None = None,
    shenzhen: str | os.PathLike | None = None,
    shenzhen_masks: str | os.PathLike | None = None,
) -> list[LungSample]:
    """All detector-set samples of the given roots (the `data.*` params), JSRT, Montgomery,
    then Shenzhen, each sorted by key. A root set to None leaves its source out; JSRT needs
    the SCR root and Shenzhen its masks root.
    """
    samples: list[LungSample] = []
    if jsrt is not None:
        if scr is None:
            raise ValueError("data.jsrt is set but data.scr is not: JSRT needs the SCR lung masks")
        samples += jsrt_source.samples(jsrt, scr)
    if montgomery is not None:
        samples += montgomery_source.samples(montgomery)
    if shenzhen is not None:
        if shenzhen_masks is None:
            raise ValueError(
                "data.shenzhen is set but data.shenzhen_masks is not: Shenzhen needs its lung masks"
            )
        samples += shenzhen_source.samples(shenzhen, shenzhen_masks)
    return samples
