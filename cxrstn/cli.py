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
from cxrstn.io import flatten, load_params
from cxrstn.runtime import configure_tools


def show(args: argparse.Namespace) -> None:
    store = ImageStore(args.store)
    if args.path not in store:
        raise SystemExit(f"error: {args.path} is not in the image store {args.store}")
    Image.fromarray(store[args.path]).save(args.out)
    print(f"wrote {args.out} ({store.size}x{store.size})")


def option_value(value) -> str:
    """A parameter value as `dvc exp run -S key=value` reads it back (YAML), with no spaces
    (the options pass through the shell) and floats with a dot, which YAML 1.1 needs."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ",".join(option_value(item) for item in value) + "]"
    if isinstance(value, float):
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    return json.dumps(value)  # int, bool, None


def set_args(params: dict, profile: dict) -> list[str]:
    """`-S key=value` for every parameter whose value in `profile` differs from `params`.

    A profile is a complete params file: a key missing on either side is an error, so that
    applying the options gives exactly the profile, never a mix with the current values.
    """
    ours, theirs = flatten(params), flatten(profile)
    for missing, where in (
        (set(theirs) - set(ours), "params.yaml"),
        (set(ours) - set(theirs), "the profile"),
    ):
        if missing:
            raise SystemExit(f"error: {', '.join(sorted(missing))} not in {where}")
    return [
        arg
        for key, value in theirs.items()
        if option_value(ours[key]) != option_value(value)
        for arg in ("-S", f"{key}={option_value(value)}")
    ]


def paper_args(args: argparse.Namespace) -> None:
    with open(args.file) as f:
        other = yaml.safe_load(f)
    print(" ".join(set_args(load_params(args.params), other)))


def main(argv: list[str] | None = None) -> None:
    configure_tools()
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
