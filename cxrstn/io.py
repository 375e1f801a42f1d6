"""Atomic output writing and small file helpers.

Every stage writes through these helpers: the content goes to a temporary sibling
(`<name>.partial`, ignored by DVC) and is moved into place only when complete, so a
stage killed at any moment leaves either the old output or none, never half a file.
A disk that fills up stops the writer with one line naming the output and the space
(`DiskFullError`), and its partial output is removed.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from cxrstn.params import require_valid

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""OSError numbers of a full disk and of an exhausted quota."""


class DiskFullError(ValueError):
    """An output did not fit on its disk; the message names it and the space involved."""


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (maybe another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_partial(path: Path) -> Path:
    """A temporary name no other writer of `path` uses: `<name>.<pid>-<random>.partial`."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def _remove_dead_partials(path: Path) -> None:
    """Delete `_own_partial` files of `path` whose writer is gone (killed mid-write)."""
    for leftover in path.parent.glob(glob.escape(path.name) + ".*-*.partial"):
        pid = leftover.name[len(path.name) + 1 :].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                _remove(leftover)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, concurrent: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write a file *or directory* to; move it to `path` on success.

    `concurrent=True` is for an output that other processes may write at the same time
    (two `cxrstn predict --out same.csv`): each writer gets its own temporary name, so
    every writer's file is whole and the last to finish is the one left. Stages keep the
    one `<name>.partial` (DVC runs one stage per output at a time).

    A full disk (ENOSPC, EDQUOT) while writing raises DiskFullError naming `path`, the
    bytes written before the disk filled and the bytes still free; the partial output is
    removed either way, so nothing half-written can be cached by DVC.
    """
    path = Path(path)
    if concurrent:
        _remove_dead_partials(path)
        tmp = _own_partial(path)
    else:
        tmp = _partial(path)
        _remove(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException as error:
        written = _size(tmp)
        _remove(tmp)
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            raise DiskFullError(_full_message(path, written)) from error
        raise
    if tmp.is_dir() or path.is_dir():
        _remove(path)
    tmp.replace(path)  # atomic for a file: a reader sees the old one or the new one


def reserve(file: str | os.PathLike, nbytes: int, output: str | os.PathLike | None = None) -> None:
    """Allocate `nbytes` of disk for `file` now, or raise DiskFullError saying how much is
    missing. A memory-mapped file needs this: writing into a sparse mapping on a full disk
    kills the process with SIGBUS instead of raising an error."""
    with open(file, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            free = shutil.disk_usage(Path(file).parent).free
            raise DiskFullError(
                f"{output or file}: no space left on the device: needs {_bytes(nbytes)}, "
                f"{_bytes(free)} free in {Path(file).parent}; free some space and rerun"
            ) from error


def _full_message(path: Path, written: int) -> str:
    parent = path.parent if path.parent.exists() else Path()
    free = shutil.disk_usage(parent).free
    return (
        f"{path}: no space left on the device: needs more than the {_bytes(written)} written "
        f"before it filled, {_bytes(free)} free in {parent.resolve()}; free some space and rerun"
    )


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _size(path: Path) -> int:
    """Bytes a file or folder holds (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


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


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, concurrent: bool = False) -> None:
    """Write `frame` as CSV, atomically (`concurrent`: see `atomic_path`)."""
    with atomic_path(path, concurrent) as tmp:
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
