"""Training of one classifier on one fold, and prediction with the trained model.

`train_run` reads top to bottom: set up, maybe resume, then one loop over epochs that
trains on the training folds, scores the validation fold and keeps the weights of the
epoch with the best validation AUC. After every epoch the whole state (model, optimizer,
RNG states, history) goes to a resume checkpoint, so an interrupted run continues where
it stopped and, on the CPU, ends exactly as an uninterrupted one would. The checkpoint
holds the config and a fingerprint of the data; it is ignored if either changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from cxrstn.data import ImageDataset, augmentation, balanced_sampler
from cxrstn.device import choose_device
from cxrstn.images import ImageStore
from cxrstn.io import atomic_path
from cxrstn.models import STN, build_model

ST_PARAMS = ("sx", "sy", "tx", "ty")


@dataclass
class TrainResult:
    model: nn.Module  # holding the best-validation weights
    best_epoch: int  # 1-based
    val_auc: float
    history: list[dict]  # per epoch: train/loss, val/loss, val/auc (as logged to dvclive)
    train_seconds: float  # training and validation passes, summed over resumed parts
    train_images_per_second: float  # images through the training passes per second


def data_fingerprint(store: ImageStore, frame: pd.DataFrame) -> str:
    """Hash of the run's images, labels and roles, and of the store's index and file stats."""
    digest = hashlib.sha256()
    digest.update(frame[["path", "label", "split"]].to_csv(index=False).encode())
    digest.update((store.directory / "index.csv").read_bytes())
    stat = (store.directory / "images.npy").stat()
    digest.update(f"{stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return images.to(device, non_blocking=True, memory_format=torch.channels_last)
    return images.to(device)


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@torch.no_grad()
def _evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of every image in the loader's order, and the ST parameters for an STN."""
    model.eval()
    logits, st_params = [], []
    for images, _, _ in loader:
        with _autocast(device):
            out = model(_to_device(images, device))
        logits.append(out.float().cpu())
        if isinstance(model, STN):
            st_params.append(model.last_params.float().cpu())
    params = torch.cat(st_params).numpy() if st_params else None
    return torch.cat(logits).numpy(), params


def _param_groups(model: nn.Module, lr: float, stn: dict | None) -> list[dict]:
    """One Adam group per part: the ST module may learn at its own rate (`stn.lr`).

    Adam moves each parameter by about lr per step whatever the gradient's size, so at the
    paper's lr of 1e-5 the ST parameters (in units of the image half-width) could move by
    0.1 only after 10,000 steps; a short CPU run needs a larger rate for them.
    """
    if not isinstance(model, STN):
        return [{"params": list(model.parameters()), "lr": lr}]
    return [
        {"params": list(model.classifier.parameters()), "lr": lr},
        {"params": list(model.st.parameters()), "lr": stn["lr"]},
    ]


def _loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device, **kw):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        **kw,
    )


def train_run(
    config: dict,
    store: ImageStore,
    frame: pd.DataFrame,
    checkpoint_path: str | os.PathLike,
    live_dir: str | os.PathLike,
) -> TrainResult:
    """Train `config["setting"]` on the rows of `frame` (`path, label, split`) marked train.

    `config` holds `setting`, `classifier`, `stn` (None unless stn) and `train` params.
    Validation uses the rows marked `val`; rows marked `test` are never read here.
    """
    from dvclive import Live  # imported here: it pulls in DVC, needed only for training

    classifier, train = config["classifier"], config["train"]
    if classifier["epochs"] < 1:
        raise ValueError(f"classifier.epochs must be at least 1, got {classifier['epochs']}")
    checkpoint_path = Path(checkpoint_path)
    if train["threads"]:
        torch.set_num_threads(train["threads"])
    device = choose_device(train["device"])
    torch.manual_seed(train["seed"])

    model = build_model(config["setting"], classifier, config["stn"]).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(_param_groups(model, classifier["lr"], config["stn"]))

    train_rows = frame[frame["split"] == "train"]
    val_rows = frame[frame["split"] == "val"]
    if val_rows["label"].nunique() < 2:
        raise ValueError("the validation fold needs both classes to compute an AUC")
    train_set = ImageDataset(
        store,
        train_rows["path"].tolist(),
        train_rows["label"].tolist(),
        augmentation(classifier["rotation"], classifier["shear"]),
    )
    val_set = ImageDataset(store, val_rows["path"].tolist(), val_rows["label"].tolist())
    sampler_generator = torch.Generator().manual_seed(train["seed"])
    loader_generator = torch.Generator().manual_seed(train["seed"] + 1)
    train_loader = _loader(
        train_set,
        classifier["batch_size"],
        train["workers"],
        device,
        sampler=balanced_sampler(train_set.labels, sampler_generator),
        generator=loader_generator,
    )
    val_loader = _loader(val_set, classifier["batch_size"], train["workers"], device)

    # Resume only a checkpoint made with this very config and data.
    fingerprint = data_fingerprint(store, frame)
    start_epoch, history, best = 1, [], {"auc": -math.inf, "epoch": 0, "state": None}
    seconds = {"total": 0.0, "train": 0.0}
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if saved["config"] == config and saved["fingerprint"] == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng"]["torch"])
            if device.type == "cuda" and saved["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
            sampler_generator.set_state(saved["rng"]["sampler"])
            loader_generator.set_state(saved["rng"]["loader"])
            start_epoch, history = saved["epoch"] + 1, saved["history"]
            best, seconds = saved["best"], saved["seconds"]
            tqdm.write(f"resuming {checkpoint_path} after epoch {saved['epoch']}")
        else:
            tqdm.write(f"ignoring {checkpoint_path}: made with another config or data")

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None)
    for record in history:  # the live dir may be gone (DVC clears outputs): replay
        for name, value in record.items():
            live.log_metric(name, value)
        live.next_step()

    epochs = classifier["epochs"]
    run_name = f"{config['setting']} fold {config['fold']}"
    for epoch in range(start_epoch, epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        for images, labels, _ in tqdm(
            train_loader, desc=f"{run_name} epoch {epoch}/{epochs}", leave=False
        ):
            images, labels = _to_device(images, device), labels.to(device)
            with _autocast(device):
                logits = model(images)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{run_name}: training loss is {loss.item()} in epoch {epoch}; "
                    "lower classifier.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            seen += len(labels)
        train_done = time.perf_counter()

        val_logits, _ = _evaluate(model, val_loader, device)
        val_labels = torch.from_numpy(val_set.labels).float()
        val_loss = F.binary_cross_entropy_with_logits(torch.from_numpy(val_logits), val_labels)
        record = {
            "train/loss": loss_sum / seen,
            "val/loss": float(val_loss),
            "val/auc": float(roc_auc_score(val_set.labels, val_logits)),
        }
        history.append(record)
        for name, value in record.items():
            live.log_metric(name, value)
        live.next_step()
        if record["val/auc"] > best["auc"]:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = {"auc": record["val/auc"], "epoch": epoch, "state": state}
        seconds["train"] += train_done - started
        seconds["total"] += time.perf_counter() - started
        tqdm.write(
            f"{run_name} epoch {epoch}/{epochs}: train loss {record['train/loss']:.4f}, "
            f"val loss {record['val/loss']:.4f}, val AUC {record['val/auc']:.4f}"
        )

        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "sampler": sampler_generator.get_state(),
            "loader": loader_generator.get_state(),
        }
        _save_checkpoint(
            checkpoint_path,
            {
                "config": config,
                "fingerprint": fingerprint,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "history": history,
                "best": best,
                "seconds": seconds,
            },
        )
    live.end()

    model.load_state_dict(best["state"])
    return TrainResult(
        model=model,
        best_epoch=best["epoch"],
        val_auc=best["auc"],
        history=history,
        train_seconds=seconds["total"],
        train_images_per_second=len(train_set) * epochs / max(seconds["train"], 1e-9),
    )


def predict(
    model: nn.Module,
    store: ImageStore,
    frame: pd.DataFrame,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> pd.DataFrame:
    """`frame` with a `score` column (the sigmoid of the logit), and sx, sy, tx, ty for an STN."""
    dataset = ImageDataset(store, frame["path"].tolist(), frame["label"].tolist())
    logits, st_params = _evaluate(model, _loader(dataset, batch_size, workers, device), device)
    scored = frame.reset_index(drop=True).copy()
    scored["score"] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if st_params is not None:
        for column, values in zip(ST_PARAMS, st_params.T, strict=True):
            scored[column] = values
    return scored


def model_file(result: TrainResult, config: dict) -> dict:
    """What `models/<setting>/fold<k>/model.pt` holds: the best weights and how they were made."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "config": config,
        "best_epoch": result.best_epoch,
        "val_auc": result.val_auc,
    }


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from its `model.pt` (plain tensors; safe `weights_only` load)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved["config"]
    classifier = {**config["classifier"], "weights": None}
    model = build_model(config["setting"], classifier, config["stn"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()
