"""Compose the README's figure from the default run's report figures.

    python bench/overview_figure.py [--report reports/report.html]
        [--roc PNG --roi PNG] [--out docs/figures/overview.png]

The README opens with one small picture of the result: the mean ROC curves of the
settings beside the ROI examples (the window each setting classifies on test images).
By default both come from `reports/report.html`, which embeds them, so the picture is
always the committed run's, the run whose numbers the README's Table II quotes;
`make docs-numbers` writes it this way together with the tables. `--roc` and `--roi`
compose two PNG files instead (e.g. `reports/figures/roc.png` and `roi_examples.png`).
The pair is put side by side at one height, shrunk to `--width` pixels and stored with a
256-colour palette, so the committed PNG stays small (about 100-200 kB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrstn.docnumbers import compose_overview, overview_from_report


def compose(roc: Path, roi: Path, out: Path, width: int = 1200) -> tuple[int, int]:
    """Write `roc` and `roi` (PNG files) side by side as `out`; returns its (width, height)."""
    image = compose_overview(roc, roi, width)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    return image.size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("reports/report.html"))
    parser.add_argument("--roc", type=Path, help="a ROC figure PNG instead of the report's")
    parser.add_argument("--roi", type=Path, help="an ROI examples PNG instead of the report's")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/overview.png"))
    parser.add_argument("--width", type=int, default=1200, help="output width in pixels")
    args = parser.parse_args(argv)
    try:
        if args.roc or args.roi:
            if not (args.roc and args.roi):
                sys.exit("error: give both --roc and --roi, or neither")
            size = compose(args.roc, args.roi, args.out, args.width)
        else:
            if not args.report.is_file():
                raise FileNotFoundError(f"{args.report}: not found (run `dvc repro` first)")
            image = overview_from_report(args.report.read_text(), args.width)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            image.save(args.out, optimize=True)
            size = image.size
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    kilobytes = args.out.stat().st_size / 1000
    print(f"wrote {args.out} ({size[0]}x{size[1]}, {kilobytes:.0f} kB)")


if __name__ == "__main__":
    main()
