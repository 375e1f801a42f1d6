"""User-facing commands.

`cxrstn show` exports a stored image as PNG; `cxrstn paper-args` turns another params
file (e.g. params.paper.yaml) into the `-S key=value` options of `dvc exp run`.
"""

from __future__ import annotations

import argparse
import json

import yaml
from PIL import Image

from cxrstn.images import ImageStore
from cxrstn.io import load_params


def show(args: argparse.Namespace) -> None:
    store = ImageStore(args.store)
    if args.path not in store:
        raise SystemExit(f"error: {args.path} is not in the image store {args.store}")
    Image.fromarray(store[args.path]).save(args.out)
    print(f"wrote {args.out} ({store.size}x{store.size})")


def leaves(record: dict, prefix: str = "") -> dict:
    """Dotted keys of a nested params dict, values as DVC's -S reads them (YAML)."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= leaves(value, name + ".")
        else:
            out[name] = (
                value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            )
    return out


def set_args(params: dict, other: dict) -> list[str]:
    """`-S key=value` for every leaf of `other` whose value differs from `params`."""
    ours = leaves(params)
    args = []
    for key, value in leaves(other).items():
        if key not in ours:
            raise SystemExit(f"error: {key} is not a parameter of params.yaml")
        if ours[key] != value:
            args += ["-S", f"{key}={value}"]
    return args


def paper_args(args: argparse.Namespace) -> None:
    with open(args.file) as f:
        other = yaml.safe_load(f)
    print(" ".join(set_args(load_params(args.params), other)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxrstn", description=__doc__)
    commands = parser.add_subparsers(required=True)
    show_parser = commands.add_parser("show", help="write one stored image as a PNG file")
    show_parser.add_argument("path", help="the image's key, e.g. the CheXpert CSV's Path value")
    show_parser.add_argument("out", help="the PNG file to write")
    show_parser.add_argument("--store", default="data/resized", help="image store directory")
    show_parser.set_defaults(func=show)
    paper = commands.add_parser(
        "paper-args", help="print `dvc exp run` -S options that apply another params file"
    )
    paper.add_argument("file", help="params file to apply, e.g. params.paper.yaml")
    paper.add_argument("--params", default="params.yaml", help="the current params file")
    paper.set_defaults(func=paper_args)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
