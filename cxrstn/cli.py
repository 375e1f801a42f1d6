"""User-facing commands.

`cxrstn predict` scores new radiographs with the trained models and writes a ranked
worklist; `cxrstn export-onnx` writes a trained classifier as ONNX; `cxrstn doctor` says
whether this machine and params.yaml are ready to run; `cxrstn show` exports a stored image
as PNG; `cxrstn paper-args` turns another params file (e.g. params.paper.yaml) into the
`-S key=value` options of `dvc exp run`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import yaml

from cxrstn import __version__
from cxrstn.io import flatten, load_params
from cxrstn.runtime import configure_tools
from cxrstn.settings import SETTINGS

EXIT_OK = 0
EXIT_ERROR = 1  # the command could not do its job: bad input, missing model or file
EXIT_USAGE = 2  # the command line itself is wrong (argparse's own code)
EXIT_PARTIAL = 3  # predict --strict: worklist written, but inputs failed or are no radiographs
EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_ERROR}  error: one line on stderr names the file and the problem
     (CXRSTN_TRACEBACK=1 shows the traceback instead)
  {EXIT_USAGE}  wrong command line (unknown option, bad value)
  {EXIT_PARTIAL}  predict --strict: results written, but at least one input could not be scored
     or is not a radiograph (input_check not_radiograph)
"""


class CommandError(Exception):
    """A failure the user can fix: printed as one `cxrstn: error: ...` line on stderr."""


def fail(message: str) -> None:
    raise CommandError(message)


def show(args: argparse.Namespace) -> None:
    from PIL import Image

    from cxrstn.images import ImageStore

    if not (Path(args.store) / "index.csv").is_file():
        fail(f"{args.store}: no image store here (run `dvc repro` first, or pass --store)")
    store = ImageStore(args.store)
    if args.path not in store:
        fail(f"{args.path} is not in the image store {args.store}")
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
            raise CommandError(f"{', '.join(sorted(missing))} not in {where}")
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


def device_choice(value: str) -> str:
    """`--device`: auto, cpu, mps, cuda or cuda:N; checked here so that a typo is a usage
    error before any model loads, not a torch traceback after."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, mps, cuda or cuda:N, got {value!r}")
    return value


def check_device_available(device: str) -> None:
    """A named accelerator that this torch cannot use is an error, not a silent CPU run."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available to this torch ({torch_build()})")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            fail(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device == "mps" and not torch.backends.mps.is_available():
        fail("--device mps: Apple MPS is not available on this machine")


def torch_build() -> str:
    import torch

    return f"torch {torch.__version__}, " + (
        f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    )


def predict(args: argparse.Namespace) -> int:
    from cxrstn.input_check import NOT_RADIOGRAPH
    from cxrstn.predict import check_summary, errors_path, run

    check_device_available(args.device)
    params = None
    if args.setting == "yolo":
        if not Path(args.params).is_file():
            fail(f"{args.params}: the yolo setting needs the params file")
        params = load_params(args.params)
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
        input_check=not args.no_input_check,
    )
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
        f"{int(results['abnormal'].sum())} called abnormal (score at or above "
        f"{ensemble.threshold:.4g}); wrote {args.out}"
    )
    print(check_summary(results))
    if len(errors):
        print(
            f"{len(errors)} input(s) could not be scored, listed in {errors_path(args.out)}:",
            file=sys.stderr,
        )
        for row in errors.head(10).itertuples():
            print(f"  {row.path}: {row.error}", file=sys.stderr)
    if not len(results):
        fail("no image could be scored")
    refused = "input_check" in results.columns and (results["input_check"] == NOT_RADIOGRAPH).any()
    if args.strict and (len(errors) or refused):
        return EXIT_PARTIAL
    return EXIT_OK


def export_onnx(args: argparse.Namespace) -> None:
    from cxrstn.export import export_onnx as export

    difference = export(args.model, args.out, args.opset)
    print(f"wrote {args.out}; ONNX Runtime matches PyTorch within {difference:.1e}")


# ---- doctor ---------------------------------------------------------------------------------

DATA_SOURCES = {
    "chexpert": "train.csv (CheXpert's folder, or a folder up to two levels above it)",
    "jsrt": "the JSRT .IMG files",
    "scr": "SCR's fold1/ and fold2/ mask folders",
    "montgomery": "CXR_png/ and ManualMask/",
    "shenzhen": "CXR_png/",
    "shenzhen_masks": "the *_mask.png files",
    "lung_boxes": "the phantom's truth.csv (known lung boxes)",
}
PHANTOM_ROOT = "data/phantom"


def source_status(key: str, path: str | None) -> tuple[str, bool]:
    """What doctor says of one data.* path, and whether it is a problem.

    The phantom's own paths are made by the pipeline's first stage, so their absence on a
    fresh clone is expected, not a problem.
    """
    from cxrstn.sources import chexpert

    if path is None:
        return "null (left out)", False
    made_by_pipeline = Path(path).resolve().is_relative_to(Path(PHANTOM_ROOT).resolve())
    if not Path(path).exists():
        if made_by_pipeline:
            return "not generated yet (the phantom stage of `dvc repro` writes it)", False
        return f"NOT FOUND (expected: {DATA_SOURCES[key]})", True
    if key == "chexpert":
        try:
            return f"found: {chexpert.find_csv(path)}", False
        except (FileNotFoundError, ValueError) as error:
            return f"PROBLEM: {error}", True
    return "found", False


GIT_IDENTITY_FIX = (
    "run `make setup` (sets one for this repository only), or "
    "`git config user.name NAME; git config user.email EMAIL`"
)


def git_identity(path: str | os.PathLike = ".") -> tuple[str | None, str | None] | None:
    """The user name and email `dvc exp run` commits with in the git repository at or above
    `path`, read as DVC's git backend reads them (libgit2: the repository's, the global and
    the system config; GIT_AUTHOR_* with GIT_COMMITTER_* override them); None for a part
    that is not set, or None outside a git repository."""
    import pygit2

    found = pygit2.discover_repository(str(path))
    if found is None:
        return None
    config = pygit2.Repository(found).config

    def value(key: str, variable: str) -> str | None:
        given = [os.environ.get(f"GIT_{who}_{variable}") for who in ("AUTHOR", "COMMITTER")]
        if all(given):
            return given[1]
        return config[key] if key in config and config[key] else None

    return value("user.name", "NAME"), value("user.email", "EMAIL")


def git_identity_status(path: str | os.PathLike = ".") -> tuple[str, bool]:
    """What doctor says of the git identity `dvc exp run` needs, and whether it is a problem."""
    identity = git_identity(path)
    if identity is None:
        return "not a git repository here (`dvc exp run` needs one; `dvc repro` does not)", False
    name, email = identity
    if name and email:
        return f"{name} <{email}>", False
    missing = " and ".join(k for k, v in (("user.name", name), ("user.email", email)) if not v)
    return f"NOT SET: {missing} (`dvc exp run` commits to git); {GIT_IDENTITY_FIX}", True


def doctor_report(params_path: str) -> tuple[list[tuple[str, str]], int]:
    """(label, value) lines of `cxrstn doctor` and the number of problems among them."""

    from cxrstn.device import choose_device
    from cxrstn.provenance import library_versions, machine_facts

    lines = [("cxrstn", __version__)]
    wanted = {"python", "torch", "torchvision", "ultralytics", "dvc"}
    lines += [(name, version) for name, version in library_versions() if name in wanted]
    problems = sum(version == "not installed" for _, version in lines)
    lines.append(("torch build", torch_build()))
    status, problem = git_identity_status()
    lines.append(("git identity", status))
    problems += problem
    if not Path(params_path).is_file():
        lines.append(("params", f"{params_path}: NOT FOUND"))
        return lines, problems + 1
    params = load_params(params_path)
    setting = str(params.get("train", {}).get("device", "auto"))
    lines.append(("device", f"train.device {setting} -> {choose_device(setting)} here"))
    facts = machine_facts()
    lines.append(("machine", f"{facts['os']}, {facts['cpu']}, {os.cpu_count()} CPU cores"))
    if "gpu" in facts:
        lines.append(("gpu", f"{facts['gpu']} (NVIDIA driver {facts['nvidia driver']})"))
    for key in DATA_SOURCES:
        path = params.get("data", {}).get(key)
        status, problem = source_status(key, path)
        lines.append((f"data.{key}", status if path is None else f"{path}: {status}"))
        problems += problem
    weights = params.get("detector", {}).get("weights")
    if weights is None:
        lines.append(("detector.weights", "null: the detector trains from scratch"))
    elif Path(weights).is_file():
        lines.append(("detector.weights", f"{weights}: found"))
    else:
        lines.append(
            ("detector.weights", f"{weights}: NOT FOUND (the COCO weights; docs/detector.md)")
        )
        problems += 1
    return lines, problems


def doctor(args: argparse.Namespace) -> int:
    lines, problems = doctor_report(args.params)
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")
    if problems:
        print(f"cxrstn: {problems} problem(s) found (see the lines in capitals)", file=sys.stderr)
        return EXIT_ERROR
    print("ready")
    return EXIT_OK


# ---- the parser -----------------------------------------------------------------------------

PREDICT_HELP = """\
Score chest radiographs with the trained models and write a worklist sorted by score,
most urgent first: path, score (the abnormality probability; the mean over the fold
models for --fold all), abnormal (1 when score >= the stored 95%-recall threshold), rank,
input_check, ood_ratio, check_reason, the image's width and height, each fold's score,
and the STN window (sx, sy, tx, ty, mean over folds) or the YOLO box (x0..y1 in image
pixels, conf, crop = cropped | whole).

input_check says how far to trust a row: ok; not_radiograph (a mask, colour image, flat
image, noise, text page or screenshot: scored but never called abnormal, unranked and
listed after every radiograph); out_of_distribution (the models' own features are further
from their training films than the 99th percentile of their held-out films: ood_ratio > 1;
the row keeps its score, call and rank). One line counts each value (docs/predict.md).

Images are prepared exactly as the pipeline prepares its own: decoded, resized to the
models' side, and for --setting yolo cropped to the detected thorax (an image without a
box at crop.conf is classified uncropped). Files that cannot be read are listed with the
reason in <out>.errors.csv (results.csv -> results.errors.csv) and on stderr; they do not
stop the run unless --strict is given.
"""

PREDICT_EPILOG = (
    """\
examples:
  cxrstn predict new_films/ --out worklist.csv
  cxrstn predict a.dcm b.png --out worklist.csv --overlays overlays/
  cxrstn predict list.csv --setting yolo --fold 2 --out worklist.csv

"""
    + EXIT_CODES
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrstn",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cxrstn {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

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
        "--setting", choices=SETTINGS, default="stn",
        help="which classifiers score (default: stn, the paper's; stn_eq: the equivariant "
        "window, not in the paper, trained by the params.attention.yaml profile)",
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
    scorer.add_argument(
        "--device", type=device_choice, default="auto",
        help="auto (cuda, then mps, then cpu), cpu, mps, cuda or cuda:N",
    )  # fmt: skip
    scorer.add_argument(
        "--strict", action="store_true",
        help=f"exit with code {EXIT_PARTIAL} when any input could not be scored or is not a "
        "radiograph",
    )  # fmt: skip
    scorer.add_argument(
        "--no-input-check", action="store_true",
        help="skip the input check (no input_check column; models without ood.npz work)",
    )  # fmt: skip
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

    checker = commands.add_parser(
        "doctor",
        help="print versions, the device and whether the data and weights params.yaml names exist",
        description="Check this machine and a params file before a run: library versions, "
        "the torch build and device, the git user name and email `dvc exp run` commits "
        "with, each data.* source and whether it is found, and the detector weights file. "
        "Exit code 1 when something is missing (paths under data/phantom are made by the "
        "pipeline and only noted).",
    )
    checker.add_argument("--params", default="params.yaml", help="the params file to check")
    checker.set_defaults(func=doctor)

    show_parser = commands.add_parser("show", help="write one stored image as a PNG file")
    show_parser.add_argument("path", help="the image's key, e.g. the CheXpert CSV's Path value")
    show_parser.add_argument("out", help="the PNG file to write")
    show_parser.add_argument("--store", default="data/resized", help="image store directory")
    show_parser.set_defaults(func=show)

    paper = commands.add_parser(
        "paper-args",
        aliases=["profile-args"],
        help="print `dvc exp run` -S options that apply another params file",
    )
    paper.add_argument("file", help="params file to apply, e.g. params.paper.yaml")
    paper.add_argument("--params", default="params.yaml", help="the current params file")
    paper.set_defaults(func=paper_args)

    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a command; exit with one of the documented codes (see EXIT_CODES).

    Bad input ends with one line on stderr; set CXRSTN_TRACEBACK=1 for the traceback.
    """
    configure_tools()
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (CommandError, ValueError, FileNotFoundError) as error:
        if os.environ.get("CXRSTN_TRACEBACK"):
            raise
        print(f"cxrstn: error: {error}", file=sys.stderr)
        code = EXIT_ERROR
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
