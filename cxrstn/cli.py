"""User-facing commands: `cxrstn show` exports a stored image as PNG."""

from __future__ import annotations

import argparse

from PIL import Image

from cxrstn.images import ImageStore


def show(args: argparse.Namespace) -> None:
    store = ImageStore(args.store)
    if args.path not in store:
        raise SystemExit(f"error: {args.path} is not in the image store {args.store}")
    Image.fromarray(store[args.path]).save(args.out)
    print(f"wrote {args.out} ({store.size}x{store.size})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxrstn", description=__doc__)
    commands = parser.add_subparsers(required=True)
    show_parser = commands.add_parser("show", help="write one stored image as a PNG file")
    show_parser.add_argument("path", help="the image's key, e.g. the CheXpert CSV's Path value")
    show_parser.add_argument("out", help="the PNG file to write")
    show_parser.add_argument("--store", default="data/resized", help="image store directory")
    show_parser.set_defaults(func=show)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
