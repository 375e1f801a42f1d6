"""Provenance of a report: commit, library versions, device and parameter differences."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import yaml

from cxrstn.io import flatten


def shown_pairs(record: dict) -> list[tuple[str, str]]:
    """(dotted key, value as text) for every leaf of a params dict or stage report."""
    return [
        (key, json.dumps(value) if isinstance(value, list) else str(value))
        for key, value in flatten(record).items()
    ]


def git_commit(root: str | os.PathLike = ".") -> str:
    """HEAD's commit, marked when the tree has changes; a readable note without git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git, or no commit yet)"
    return commit + (" with uncommitted changes" if dirty else "")


def library_versions() -> list[tuple[str, str]]:
    """Versions of the libraries the results depend on (from package metadata)."""
    wanted = {
        "torch": ("torch",),
        "torchvision": ("torchvision",),
        "ultralytics": ("ultralytics", "ultralytics-opencv-headless"),
        "scikit-learn": ("scikit-learn",),
        "numpy": ("numpy",),
        "pandas": ("pandas",),
        "matplotlib": ("matplotlib",),
        "dvc": ("dvc",),
        "dvclive": ("dvclive",),
    }
    rows = [("python", platform.python_version())]
    for name, distributions in wanted.items():
        version = "not installed"
        for distribution in distributions:
            try:
                version = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        rows.append((name, version))
    return rows


def machine_facts() -> dict[str, str]:
    """The OS, CPU model, GPU models and NVIDIA driver, from torch's own `collect_env`.

    Only its quick, local probes (os-release, lscpu, nvidia-smi when there is a GPU):
    `get_env_info()` as a whole also lists pip and conda packages, about 1.5 s here, and
    library_versions already has what matters of those.
    """
    import torch
    from torch.utils import collect_env

    run = collect_env.run
    facts = {"os": collect_env.get_os(run) or platform.platform()}
    cpu = collect_env.get_cpu_info(run) or ""
    model = next((line for line in cpu.splitlines() if line.startswith("Model name:")), "")
    facts["cpu"] = model.partition(":")[2].strip() or platform.processor() or "unknown"
    if torch.cuda.is_available():
        facts["gpu"] = collect_env.get_gpu_info(run) or torch.cuda.get_device_name(0)
        facts["nvidia driver"] = collect_env.get_nvidia_driver_version(run) or "unknown"
    return facts


def device_description(train_device: str) -> str:
    """The machine the report was made on and the training device setting."""
    import torch

    facts = machine_facts()
    if torch.cuda.is_available():
        accelerator = f"CUDA: {facts['gpu']} (driver {facts['nvidia driver']})"
    elif torch.backends.mps.is_available():
        accelerator = "Apple MPS"
    else:
        accelerator = "no GPU"
    return (
        f"train.device: {train_device}; this machine: {facts['os']}, {facts['cpu']}, "
        f"{os.cpu_count()} CPU cores, {accelerator}"
    )


def params_differences(params: dict, other_path: str | os.PathLike) -> list | None:
    """(key, ours, theirs) for every leaf that differs from another params file, or None."""
    other_path = Path(other_path)
    if not other_path.is_file():
        return None
    ours = dict(shown_pairs(params))
    theirs = dict(shown_pairs(yaml.safe_load(other_path.read_text())))
    keys = sorted(set(ours) | set(theirs))
    return [
        (key, ours.get(key, "—"), theirs.get(key, "—"))
        for key in keys
        if ours.get(key) != theirs.get(key)
    ]
