"""User-facing commands.

`cxrstn predict` scores new radiographs with the trained models and writes a ranked
worklist; `cxrstn export-onnx` writes a trained classifier as ONNX; `cxrstn show` exports
a stored image as PNG; `cxrstn paper-args` turns another params file (e.g.
params.paper.yaml) into the `-S key=value` options of `dvc exp run`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def fold_choice(value: str) -> int | None:
    """`--fold`: `all` (None, the mean of every fold model) or a fold number."""
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'all' or a fold number, got {value!r}")
    return int(value)


def predict(args: argparse.Namespace) -> None:
    from cxrstn.predict import errors_path, run

    params = None
    if args.setting == "yolo":
        if not Path(args.params).is_file():
            raise SystemExit(f"error: {args.params}: the yolo setting needs the params file")
        params = load_params(args.params)
    try:
        result = run(
            args.paths,
            args.out,
            setting=args.setting,
            fold=args.fold,
            models_dir=args.models,
            params=params,
            overlays=args.overlays,
            threshold=args.threshold,
            device=args.device,
        )
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    inputs, results, errors = result.inputs, result.results, result.errors
    for suffix, count in sorted(inputs.ignored.items()):
        print(f"ignored {count} file(s) in the folders that are no image ({suffix})")
    if inputs.duplicates:
        print(f"{inputs.duplicates} file(s) named more than once, scored once")
    ensemble = result.ensemble
    folds = ", ".join(map(str, ensemble.folds))
    models = f"folds {folds} (mean score)" if args.fold is None else f"fold {folds}"
    print(
        f"scored {len(results)} image(s) with {ensemble.setting} {models}: "
        f"{int(results['abnormal'].sum())} at or above the threshold {ensemble.threshold:.4g}; "
        f"wrote {args.out}"
    )
    if len(errors):
        print(f"{len(errors)} input(s) could not be scored, listed in {errors_path(args.out)}:")
        for row in errors.head(10).itertuples():
            print(f"  {row.path}: {row.error}")
    if not len(results):
        raise SystemExit("error: no image could be scored")


def export_onnx(args: argparse.Namespace) -> None:
    from cxrstn.export import export_onnx as export

    try:
        difference = export(args.model, args.out, args.opset)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {args.out}; ONNX Runtime matches PyTorch within {difference:.1e}")


PREDICT_HELP = """\
Score chest radiographs with the trained models and write a worklist sorted by score,
most urgent first: path, score (the abnormality probability; the mean over the fold
models for --fold all), abnormal (1 when score >= the stored 95%-recall threshold), rank,
the image's width and height, each fold's score, and the STN window (sx, sy, tx, ty,
mean over folds) or the YOLO box (x0..y1 in image pixels, conf, crop = cropped | full).

Images are prepared exactly as the pipeline prepares its own: decoded, resized to the
models' side, and for --setting yolo cropped to the detected thorax (an image without a
box at crop.conf is classified uncropped). Files that cannot be read are listed with the
reason in <out>.errors.csv (results.csv -> results.errors.csv) and do not stop the run.
"""

PREDICT_EPILOG = """\
examples:
  cxrstn predict new_films/ --out worklist.csv
  cxrstn predict a.dcm b.png --out worklist.csv --overlays overlays/
  cxrstn predict list.csv --setting yolo --fold 2 --out worklist.csv
"""


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

    scorer = commands.add_parser(
        "predict",
        help="score new radiographs and write a ranked worklist CSV",
        description=PREDICT_HELP,
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scorer.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="an image (PNG, JPEG, DICOM, raw .IMG), a folder (searched recursively) or a CSV "
        "of paths (column 'path', else the first; relative to the CSV's folder)",
    )
    scorer.add_argument("--out", required=True, help="the ranked CSV to write")
    scorer.add_argument(
        "--overlays", metavar="DIR", help="also write one PNG per image with the STN window "
        "(one per fold model) or the YOLO box drawn on it"
    )  # fmt: skip
    scorer.add_argument(
        "--setting", choices=["stn", "yolo", "baseline"], default="stn",
        help="which classifiers score (default: stn)",
    )  # fmt: skip
    scorer.add_argument(
        "--fold", type=fold_choice, default=None, metavar="all|K",
        help="'all' (default) averages the scores of every fold model; K uses fold K's model",
    )  # fmt: skip
    scorer.add_argument(
        "--models", default="models",
        help="folder with <setting>/fold<k>/model.pt, thresholds.json and detector.pt",
    )  # fmt: skip
    scorer.add_argument(
        "--threshold", type=float,
        help="call abnormal at this score instead of the stored operating threshold",
    )  # fmt: skip
    scorer.add_argument(
        "--params", default="params.yaml",
        help="params file with the crop and detector settings (yolo setting only)",
    )  # fmt: skip
    scorer.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, mps, cpu")
    scorer.set_defaults(func=predict)

    exporter = commands.add_parser(
        "export-onnx",
        help="write a trained classifier (with its ST module) as ONNX",
        description="Export models/<setting>/fold<k>/model.pt to ONNX. Input 'image': float32 "
        "N x 1 x S x S in [0, 1] (S = resize.size, images resized as the pipeline does); "
        "outputs 'score' (N) and, for an STN, 'st_params' (N x 4: sx, sy, tx, ty). The file "
        "is written only if ONNX Runtime reproduces PyTorch's scores within 1e-4.",
    )
    exporter.add_argument("model", help="a model.pt written by the train stage")
    exporter.add_argument("out", help="the .onnx file to write")
    exporter.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 18)")
    exporter.set_defaults(func=export_onnx)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
