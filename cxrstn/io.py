"""Atomic output writing and small file helpers.

Every stage writes through these helpers: the content goes to a temporary sibling
(`<name>.partial`, ignored by DVC) and is moved into place only when complete, so a
stage killed at any moment leaves either the old output or none, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from cxrstn.params import require_valid


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file *or directory* to; move it to `path` on success."""
    path = Path(path)
    tmp = _partial(path)
    _remove(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _remove(path)
    tmp.replace(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


class ParamsLoader(yaml.SafeLoader):
    """YAML as DVC writes it: `dvc exp run -S` rewrites params.yaml in YAML 1.2, where
    `1e-05` is a float; PyYAML's YAML 1.1 would read it as the string "1e-05"."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


# Why not `dvc.api.params_show(stages=...)`: it would keep the float fix above (DVC reads
# YAML 1.2: `1e-05` is a float), but it needs a DVC repository around the stage (the
# stage tests run the scripts in plain folders; `cxrstn predict --params` reads any
# file), and opening the repo to collect its index took 1.6 s per call, measured on
# this project's 2-core machine: about 30 s more on a default run of 20 stages.
def load_params(path: str | os.PathLike = "params.yaml", check: bool = True) -> dict:
    """Read the pipeline parameters (the whole `params.yaml`).

    Every stage starts here, so every key present is checked against the schema in
    `cxrstn.params` (`check=False` skips it): a typo or a value out of range stops the
    stage with one line per problem (ParamsError, a ValueError) before any data is read.
    """
    with open(path) as f:
        params = yaml.load(f, Loader=ParamsLoader)  # a SafeLoader: no arbitrary objects
    return require_valid(params, str(path), complete=False) if check else params


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested dicts, and lists holding dicts, as `{dotted key: leaf value}`.

    `{"a": {"b": 1}, "d": [{"e": 3}]}` gives `{"a.b": 1, "d[0].e": 3}`; a list of plain
    values (a parameter such as `stn.loc_channels`) stays one leaf. The one flattening of
    params and stage reports: `dvc exp run -S` options, profile comparisons, report cards.
    """
    flat = {}
    for key, value in record.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat |= flatten(value, name)
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            for index, item in enumerate(value):
                item_name = f"{name}[{index}]"
                flat |= flatten(item, item_name) if isinstance(item, dict) else {item_name: item}
        else:
            flat[name] = value
    return flat


def check_excluded(excluded: int, total: int, max_share: float, what: str) -> None:
    """Stop the run when more than `max_share` of `total` items had to be excluded."""
    if total and excluded / total > max_share:
        raise SystemExit(
            f"error: {excluded} of {total} {what} excluded ({excluded / total:.1%}), more than "
            f"data.max_excluded = {max_share:.1%}; see the stage's report for the files and reasons"
        )
