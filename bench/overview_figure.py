"""Compose the README's figure from the default run's report figures.

    python bench/overview_figure.py [--roc reports/figures/roc.png]
        [--roi reports/figures/roi_examples.png] [--out docs/figures/overview.png]

The README opens with one small picture of the result: the mean ROC curves of the three
settings beside the ROI examples (the window each setting classifies on test images). The
report stage writes both figures; this script puts them side by side at one height,
shrinks the pair to `--width` pixels and stores it with a 256-colour palette, so the
committed PNG stays small (about 100-200 kB). Run it after the pipeline run whose figures
the README should show, then commit docs/figures/overview.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

GAP = 16  # white pixels between the two panels, at the output's scale


def compose(roc: Path, roi: Path, out: Path, width: int = 1200) -> tuple[int, int]:
    """Write `roc` and `roi` side by side, scaled to a common height, `width` pixels wide
    in all; returns the written image's (width, height)."""
    panels = []
    for path in (roc, roi):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: figure not found (run `dvc repro` first)")
        panels.append(Image.open(path).convert("RGB"))
    height = min(panel.height for panel in panels)
    scaled = [
        panel.resize((round(panel.width * height / panel.height), height), Image.LANCZOS)
        for panel in panels
    ]
    gap = round(GAP * sum(p.width for p in scaled) / width)
    canvas = Image.new("RGB", (sum(p.width for p in scaled) + gap, height), "white")
    canvas.paste(scaled[0], (0, 0))
    canvas.paste(scaled[1], (scaled[0].width + gap, 0))
    if canvas.width > width:
        canvas = canvas.resize((width, round(height * width / canvas.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return canvas.size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roc", type=Path, default=Path("reports/figures/roc.png"))
    parser.add_argument("--roi", type=Path, default=Path("reports/figures/roi_examples.png"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures/overview.png"))
    parser.add_argument("--width", type=int, default=1200, help="output width in pixels")
    args = parser.parse_args(argv)
    try:
        size = compose(args.roc, args.roi, args.out, args.width)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    kilobytes = args.out.stat().st_size / 1000
    print(f"wrote {args.out} ({size[0]}x{size[1]}, {kilobytes:.0f} kB)")


if __name__ == "__main__":
    main()
