"""The schema of params.yaml: every key's type, range or allowed values, checked before work.

A typo in a key (`classifier.epochz`), a value out of range (`crop.conf: 1.5`) or one the
code cannot use (`split.folds: 1`) used to run a stage to its end, or fail deep inside it.
`check_params` lists each problem as one line naming the key, the value and what is
allowed; `cxrstn.io.load_params` raises `ParamsError` with those lines before a stage
reads any data, and `cxrstn doctor` prints them.

One pydantic model per section. Extending a section is one line in its class, e.g.
`norm: Literal["none", "batch"]` in `Classifier`; unknown keys are refused, so a key
added to params.yaml needs its line here. Values are strict: `epochs: 5.0` or
`tta: "yes"` are refused rather than silently converted. Relations between keys
(`stn.sample_size >= classifier.input_size`, ...) are in `_relations`.

This module imports nothing of ours but the settings' names (`cxrstn.settings`, which imports
nothing): `cxrstn.io` imports it.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from cxrstn.settings import ST_SETTINGS


class ParamsError(ValueError):
    """Bad parameters: the message holds one line per problem."""


class Section(BaseModel):
    """A params.yaml section: unknown keys refused, no type conversion."""

    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------- value types

Count = Annotated[int, Field(ge=0)]
"""A whole number >= 0 (seeds, worker and thread counts where 0 means 'all cores')."""
Positive = Annotated[int, Field(ge=1)]
Share = Annotated[float, Field(ge=0, le=1)]
Rate = Annotated[float, Field(gt=0)]
Path_ = Annotated[str, StringConstraints(min_length=1)]
"""A file or folder path (not checked for existence here: the stage that reads it does)."""


def _rule(test, allowed: str) -> AfterValidator:
    """A check whose error says what is allowed."""

    def check(value):
        if not test(value):
            raise ValueError(f"must be {allowed}")
        return value

    return AfterValidator(check)


Size2 = Annotated[list[Annotated[int, Field(ge=32)]], Field(min_length=2, max_length=2)]
"""`[width, height]` in whole pixels, each at least 32."""

Sha256 = Annotated[
    str, _rule(lambda v: re.fullmatch(r"[0-9a-fA-F]{64}", v), "64 hex digits (sha256sum's output)")
]
DetectorDevice = Annotated[
    str | int,
    _rule(
        lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?|\d+(,\d+)*", str(v)),
        "auto, cpu, mps, cuda, cuda:N or GPU indices such as 0 or 0,1",
    ),
]
TorchDevice = Annotated[
    str,
    _rule(lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v), "auto, cuda, cuda:N, mps or cpu"),
]


# ---------------------------------------------------------------- sections


class Data(Section):
    chexpert: Path_
    jsrt: Path_ | None
    scr: Path_ | None
    montgomery: Path_ | None
    shenzhen: Path_ | None
    shenzhen_masks: Path_ | None
    max_excluded: Share
    lung_boxes: Path_ | None


class Phantom(Section):
    seed: Count
    chexpert_patients: Positive
    chexpert_size: Size2
    jsrt_images: Count
    jsrt_side: Annotated[int, Field(ge=64), _rule(lambda v: v % 2 == 0, "even")]
    montgomery_images: Count
    montgomery_size: Size2
    shenzhen_images: Count
    shenzhen_size: Size2
    shenzhen_mask_share: Share
    text_label_correlation: Share
    finding_contrast: Annotated[float, Field(ge=0)]
    workers: Count


class Labels(Section):
    uncertain: Literal["ones", "zeros", "ignore"]
    views: Annotated[list[Literal["PA", "AP", "LL", "RL"]], Field(min_length=1)]


class Resize(Section):
    size: Annotated[int, Field(ge=32)]
    workers: Count


class Split(Section):
    folds: Annotated[int, Field(ge=3, description="a test, a validation and a training fold")]
    fold_ids: Annotated[list[Count], Field(min_length=1)]
    stn_eq_fold_ids: list[Count]
    seed: Count


OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "auto")
"""Ultralytics' optimizer names (its trainer's list)."""

Unset = None  # default of an optional ultralytics key: absent means ultralytics' default


class Detector(Section):
    model: Annotated[
        str, _rule(lambda v: v.endswith((".yaml", ".yml")), "an ultralytics model .yaml")
    ]
    weights: Path_ | None
    weights_sha256: Sha256 | None = None
    device: DetectorDevice
    epochs: Positive
    imgsz: Annotated[int, Field(ge=32), _rule(lambda v: v % 32 == 0, "a multiple of 32")]
    batch: Annotated[int, Field(ge=1)] | Literal[-1]
    nbs: Positive
    lr0: Rate
    optimizer: Literal[OPTIMIZERS]
    warmup_epochs: Annotated[float, Field(ge=0)]
    keep_best: bool
    val_fraction: Annotated[float, Field(gt=0, lt=1)]
    seed: Count
    deterministic: bool
    workers: Count
    threads: Count = 0
    augment: dict[str, int | float | bool | str | None] = Field(default_factory=dict)
    # Further ultralytics trainer settings the stage passes on when present (detector.TRAIN_KEYS).
    lrf: Rate = Unset
    momentum: Annotated[float, Field(ge=0, lt=1)] = Unset
    weight_decay: Annotated[float, Field(ge=0)] = Unset
    cos_lr: bool = Unset
    box: Annotated[float, Field(ge=0)] = Unset
    cls: Annotated[float, Field(ge=0)] = Unset
    dfl: Annotated[float, Field(ge=0)] = Unset
    cache: bool | Literal["ram", "disk"] = Unset


class Crop(Section):
    conf: Share
    low_conf: Literal["drop", "full"]
    tta: bool
    batch: Positive


class Classifier(Section):
    arch: Literal["vgg16"]
    in_channels: Literal[1, 3]
    width: Annotated[float, Field(gt=0, le=4)]
    input_size: Annotated[
        int, Field(ge=32, description="VGG16 halves it five times: at least 32 px")
    ]
    sample_size: Annotated[int, Field(ge=32)] | None
    norm: Literal["none", "batch"]
    weights: Path_ | None
    dropout: Annotated[float, Field(ge=0, lt=1)]
    epochs: Positive
    lr: Rate
    batch_size: Positive
    rotation: Annotated[float, Field(ge=0, le=180)]
    shear: Annotated[float, Field(ge=0, lt=90)]


class Stn(Section):
    loc_net: Literal["compact", "authors"]
    sx_init: Annotated[float, Field(gt=0, le=10)]
    sy_init: Annotated[float, Field(gt=0, le=10)]
    tx_init: Annotated[float, Field(ge=-1, le=1)]
    ty_init: Annotated[float, Field(ge=-1, le=1)]
    loc_size: Annotated[int, Field(ge=16), _rule(lambda v: v % 16 == 0, "a multiple of 16")]
    loc_channels: Annotated[list[Positive], Field(min_length=4, max_length=4)]
    loc_hidden: Positive
    loc_norm: bool
    scale_range: (
        Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2)] | None
    )
    keep_inside: bool
    lr: Annotated[float, Field(ge=0)]  # 0 holds the ST module at its initial window
    loc_lr: Annotated[float, Field(ge=0)] | None
    warm_start: Literal["none", "baseline"]
    warmup_epochs: Count
    warmup_sides: (
        Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=2, max_length=2)]
        | None
    )
    apex_weight: Annotated[float, Field(ge=0)]
    apex_c: Annotated[float, Field(gt=0)]
    area_weight: Annotated[float, Field(ge=0)]
    reinforce_sigma: (
        Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2)] | None
    )
    reinforce_pairs: bool
    equivariance_weight: Annotated[float, Field(ge=0)]
    equivariance_zoom: Annotated[float, Field(ge=1, le=4)]
    label_grad: Literal["module", "bias", "none"]


class Train(Section):
    device: TorchDevice
    seed: Count
    threads: Count
    workers: Count
    amp: Literal["none", "bf16"]
    launcher: Annotated[str, _rule(str.strip, "a command, e.g. python")]


class Eval(Section):
    recall: Annotated[float, Field(gt=0, le=1)]
    bootstrap: Positive
    bootstrap_seed: Count
    threshold_on: Literal["test", "val"]


class Shortcut(Section):
    seed: Count
    workers: Count


class Report(Section):
    roi_examples: Count


class Params(Section):
    """The whole params.yaml (and params.paper.yaml): every section."""

    data: Data
    phantom: Phantom
    labels: Labels
    resize: Resize
    split: Split
    detector: Detector
    crop: Crop
    classifier: Classifier
    stn: Stn
    stn_eq: Stn
    train: Train
    eval: Eval
    shortcut: Shortcut
    report: Report


# ---------------------------------------------------------------- checking


def check_params(params: dict, source: str = "params.yaml", complete: bool = True) -> list[str]:
    """Every problem in `params` as one line: `<source>: <key> = <value>: <what is allowed>`.

    `complete=False` checks the keys that are there and lets missing ones pass (a stage
    run by hand on a partial file, as tests do; DVC itself refuses a stage whose params
    are missing). An empty list means the parameters are good.
    """
    if not isinstance(params, dict):
        return [f"{source}: must hold sections of key: value pairs, got {_show(params)}"]
    problems = []
    try:
        Params.model_validate(params)
    except ValidationError as error:
        problems = _lines(error.errors(), params, complete)
    if not problems:
        problems = _relations(params, complete)
    return [f"{source}: {problem}" for problem in problems]


def require_valid(params: dict, source: str = "params.yaml", complete: bool = True) -> dict:
    """`params` unchanged if `check_params` finds nothing, else ParamsError with its lines."""
    if problems := check_params(params, source, complete):
        raise ParamsError("\n".join(problems))
    return params


def _lines(errors: list[dict], params: dict, complete: bool) -> list[str]:
    """pydantic's errors as one line per key; a union's alternatives joined by "or"."""
    by_key: dict[str, tuple[str, list[str]]] = {}
    for item in errors:
        loc = tuple(p for p in item["loc"] if not _is_type_tag(p))
        key = _key(loc)
        if item["type"] == "missing":
            if complete:
                by_key.setdefault(key, (f"{key}: missing", []))
            continue
        if item["type"] == "extra_forbidden":
            by_key.setdefault(key, (_unknown(loc), []))
            continue
        head, alternatives = by_key.setdefault(
            key, (f"{key} = {_show(_value_at(params, loc))}", [])
        )
        what = _what(item)
        if what not in alternatives:
            alternatives.append(what)
    lines = []
    for key, (head, alternatives) in by_key.items():
        if not alternatives:
            lines.append(head)
            continue
        joined = alternatives[0] + "".join(
            f" or {w.removeprefix('must be ')}" for w in alternatives[1:]
        )
        field = _field_at(key.split("[")[0].split("."))
        if field is not None and field.description:
            joined += f" ({field.description})"
        lines.append(f"{head}: {joined}")
    return lines


def _what(item: dict) -> str:
    """What a pydantic error says is allowed, as `must be ...`."""
    kind, ctx = item["type"], item.get("ctx", {})
    bounds = {
        "greater_than": f"> {ctx.get('gt')}",
        "greater_than_equal": f">= {ctx.get('ge')}",
        "less_than": f"< {ctx.get('lt')}",
        "less_than_equal": f"<= {ctx.get('le')}",
        "int_type": "a whole number",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "text",
        "list_type": "a list",
        "dict_type": "key: value pairs",
        "model_type": "a section of key: value pairs",
        "none_required": "null",
        "string_too_short": "not empty",
    }
    if kind in bounds:
        return f"must be {bounds[kind]}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    message = item["msg"].removeprefix("Value error, ")
    return message.replace("Input should be", "must be")


def _unknown(loc: tuple) -> str:
    parent = [part for part in loc[:-1] if isinstance(part, str)]
    model = _model_at(parent)
    known = list(model.model_fields) if model is not None else []
    where = f"section {'.'.join(parent)}" if parent else "params.yaml"
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{_key(loc)}: unknown key; {hint}{where} takes {', '.join(known)}"


def _key(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def _value_at(params, loc: tuple):
    value = params
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return value
    return value


def _show(value) -> str:
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
    text = text.strip().removesuffix("...").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def _is_type_tag(part) -> bool:
    """pydantic adds the union member tried (`int`, `literal['a']`, ...) to an error's loc."""
    return isinstance(part, str) and bool(
        re.match(r"^(int|float|str|bool|list|dict|literal|function|constrained)\b", part)
    )


def _model_at(path: list[str]):
    model = Params
    for name in path:
        field = model.model_fields.get(name)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field_at(names: list[str]):
    if len(names) < 2:
        return None
    model = _model_at(names[:-1])
    return model.model_fields.get(names[-1]) if model is not None else None


SET_BY_STAGE = {
    "data", "project", "name", "exist_ok", "device", "single_cls", "pretrained", "val",
    "plots", "verbose", "model", "mode", "task",
}  # fmt: skip
"""Ultralytics settings the train_detector stage sets itself: not for detector.augment."""


@cache
def ultralytics_settings() -> frozenset[str]:
    """The trainer settings ultralytics knows (its cfg/default.yaml), read without importing
    it; empty when ultralytics is not installed."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    default = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml"
    if not default.is_file():
        return frozenset()
    return frozenset(yaml.safe_load(default.read_text()))


def _st_relations(stn: dict, section: str, size: int | None) -> list[str]:
    """Checks between the keys of one ST module's section (`stn`, `stn_eq`)."""
    problems = []
    if size is not None and stn.get("loc_net") == "authors" and size < 78:
        problems.append(
            f"classifier.input_size = {size}: {section}.loc_net authors needs at least 78 px "
            "(four unpadded convs and poolings)"
        )
    if stn.get("scale_range") is not None:
        low, high = stn["scale_range"]
        scales = {k: stn[k] for k in ("sx_init", "sy_init") if k in stn}
        if low >= high:
            problems.append(
                f"{section}.scale_range = [{low}, {high}]: must be [low, high], low < high"
            )
        for name, value in scales.items():
            if not low < value < high:
                problems.append(
                    f"{section}.{name} = {value}: must lie inside {section}.scale_range "
                    f"({low}, {high})"
                )
        for name in ("tx_init", "ty_init"):
            if name in stn and not -1 < stn[name] < 1:
                problems.append(
                    f"{section}.{name} = {stn[name]}: must lie in (-1, 1) with "
                    f"{section}.scale_range set"
                )
    if stn.get("keep_inside") and (stn.get("scale_range") is None or stn["scale_range"][1] > 1):
        problems.append(
            f"{section}.keep_inside = true: needs {section}.scale_range with high <= 1, got "
            f"{stn.get('scale_range')}"
        )
    sides = stn.get("warmup_sides")
    if sides is not None and sides[0] > sides[1]:
        problems.append(f"{section}.warmup_sides = {sides}: must be [low, high], low <= high")
    if sides is not None and not stn.get("warmup_epochs"):
        problems.append(
            f"{section}.warmup_sides = {sides}: needs {section}.warmup_epochs >= 1 (the epochs "
            "it applies to)"
        )
    return problems


def _relations(params: dict, complete: bool) -> list[str]:
    """Checks between keys, on parameters whose single values are already valid."""
    problems = []
    classifier = params.get("classifier") or {}
    detector, split = params.get("detector") or {}, params.get("split") or {}

    size = classifier.get("input_size")
    sample = classifier.get("sample_size")
    if size is not None and sample is not None and sample < size:
        problems.append(
            f"classifier.sample_size = {sample}: must be at least classifier.input_size ({size})"
        )
    for section in ST_SETTINGS:
        problems += _st_relations(params.get(section) or {}, section, size)

    augment = detector.get("augment") or {}
    known = ultralytics_settings()
    for name in augment:
        if name in detector:
            problems.append(f"detector.augment.{name}: set twice, here and as detector.{name}")
        elif name in SET_BY_STAGE:
            problems.append(f"detector.augment.{name}: set by the stage itself, not a parameter")
        elif known and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"detector.augment.{name}: not an ultralytics training setting{hint}")

    if complete and {"folds", "fold_ids"} <= split.keys():
        expected = list(range(split["folds"]))
        if list(split["fold_ids"]) != expected:
            problems.append(
                f"split.fold_ids = {split['fold_ids']}: must be {expected} "
                f"(0 .. split.folds - 1 = {split['folds'] - 1})"
            )
    if complete and {"fold_ids", "stn_eq_fold_ids"} <= split.keys():
        chosen = list(split["stn_eq_fold_ids"])
        if chosen and chosen != list(split["fold_ids"]):
            problems.append(
                f"split.stn_eq_fold_ids = {chosen}: must be [] (stn_eq left out) or "
                f"split.fold_ids ({list(split['fold_ids'])}): a setting is evaluated on every fold"
            )
    return problems
