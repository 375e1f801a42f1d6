"""Training of one classifier on one fold, and prediction with the trained model.

`train_run` reads top to bottom over named steps: set up the run, resume from a
checkpoint if there is one, then per epoch train on the training folds, score the
validation fold, keep the weights of the best validation AUC and save a checkpoint.
After every epoch the whole state (model, optimizer, RNG states, history) goes to that
resume checkpoint, so an interrupted run continues where it stopped and, on the CPU,
ends exactly as an uninterrupted one would. The checkpoint holds the config and a
fingerprint of the data; it is ignored if either changed.

Validation and test scores are always computed in float32; bf16 autocast
(`train.amp: bf16`) is used for the training passes only.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
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
from cxrstn.distributed import ShardedSampler, World, local_batch_size, start, stop
from cxrstn.images import ImageStore
from cxrstn.io import atomic_path
from cxrstn.models import STN, build_model, equivariance_slope, load_warm_start, random_windows
from cxrstn.roi import ST_PARAMS, coverage, iou, stn_window

BOX = ["x0", "y0", "x1", "y1"]


@dataclass
class TrainResult:
    model: nn.Module  # holding the best-validation weights
    best_epoch: int  # 1-based
    val_auc: float
    history: list[dict]  # per epoch: what was logged to dvclive (train/loss, val/auc, ...)
    train_seconds: float  # training and validation passes, summed over resumed parts
    train_images_per_second: float  # images through the training passes per second
    budget: dict  # epochs and training images behind the model, a warm start's included


@dataclass
class Run:
    """Everything a run needs that is built from its config and data."""

    name: str
    config: dict
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_set: ImageDataset
    val_set: ImageDataset
    train_loader: DataLoader
    val_loader: DataLoader
    generators: dict[str, torch.Generator]  # sampler and loader generators, checkpointed
    val_boxes: np.ndarray | None  # normalized lung boxes of the val images, when known
    fingerprint: str
    world: World  # this process among the run's processes (torchrun), or a world of one
    train_model: nn.Module  # `model`, wrapped in DistributedDataParallel in a world of several


@dataclass
class Progress:
    """What changes from epoch to epoch, and is saved with every checkpoint."""

    epoch: int = 0  # last finished epoch
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"auc": -math.inf, "epoch": 0, "state": None})
    seconds: dict = field(default_factory=lambda: {"total": 0.0, "train": 0.0})


def input_side(model: nn.Module) -> int | None:
    """The side the data loader shrinks images to before augmenting them, the resize the
    model would apply first anyway: the source copy every setting's window is sampled
    from (`classifier.sample_size`; None: the stored image)."""
    return getattr(model.classifier if isinstance(model, STN) else model, "sample_size", None)


def warm_start_path(stn: dict | None, fold: int) -> str | None:
    """The baseline `model.pt` an STN's classifier starts from (`stn.warm_start`), or None."""
    choice = (stn or {}).get("warm_start", "none")
    if choice not in ("none", "baseline"):
        raise ValueError(f"stn.warm_start must be none or baseline, got {choice!r}")
    return f"models/baseline/fold{fold}/model.pt" if choice == "baseline" else None


def data_fingerprint(store: ImageStore, frame: pd.DataFrame) -> str:
    """Hash of the run's images, labels and roles, and of the store's index and file stats."""
    digest = hashlib.sha256()
    digest.update(frame[["path", "label", "split"]].to_csv(index=False).encode())
    digest.update((store.directory / "index.csv").read_bytes())
    stat = (store.directory / "images.npy").stat()
    digest.update(f"{stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def train_run(
    config: dict,
    store: ImageStore,
    frame: pd.DataFrame,
    checkpoint_path: str | os.PathLike,
    live_dir: str | os.PathLike,
    lung_boxes: pd.DataFrame | None = None,
    world: World | None = None,
) -> TrainResult | None:
    """Train `config["setting"]` on the rows of `frame` (`path, label, split`) marked train.

    `config` holds `setting`, `classifier`, `stn` (None unless stn) and `train` params, and
    optionally `warm_start`: a baseline's model.pt the STN's classifier starts from.
    Validation uses the rows marked `val`; rows marked `test` are never read here.
    `lung_boxes` (path, x0, y0, x1, y1 normalized), when given, lets an STN log how well
    its validation windows frame the lungs, epoch by epoch.

    In a `world` of several processes (torchrun, `cxrstn.distributed`) each trains on its
    share of every batch; validation, logging and checkpoints are the main process's, and
    only it gets the result (the others get None).
    """
    from dvclive import Live  # imported here: it pulls in DVC, needed only for training

    run = setup(config, store, frame, lung_boxes, world or World())
    main = run.world.is_main
    progress = resume(run, Path(checkpoint_path))
    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) if main else None
    for record in progress.history if main else []:  # the live dir may be gone: replay
        log(live, record)
    epochs = config["classifier"]["epochs"]
    for epoch in range(progress.epoch + 1, epochs + 1):
        started = time.perf_counter()
        train_loss = train_epoch(run, epoch)
        if not main:
            continue
        train_done = time.perf_counter()
        record = {"train/loss": train_loss} | validate(run)
        log(live, record)
        keep_best(run, progress, record, epoch)
        progress.seconds["train"] += train_done - started
        progress.seconds["total"] += time.perf_counter() - started
        tqdm.write(
            f"{run.name} epoch {epoch}/{epochs}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in record.items())
        )
        save_checkpoint(Path(checkpoint_path), checkpoint(run, progress))
    stop(run.world)
    if not main:
        return None
    live.end()

    run.model.load_state_dict(progress.best["state"])
    return TrainResult(
        model=run.model,
        best_epoch=progress.best["epoch"],
        val_auc=progress.best["auc"],
        history=progress.history,
        train_seconds=progress.seconds["total"],
        train_images_per_second=len(run.train_set) * epochs / max(progress.seconds["train"], 1e-9),
        budget=training_budget(epochs, len(run.train_set), config.get("warm_start")),
    )


def training_budget(epochs: int, n_train: int, warm_start: str | None = None) -> dict:
    """Epochs and images drawn for training (the sampler draws n_train per epoch), plus
    those of the baseline a warm start began from: Table II compares settings fairly
    only when these are equal, whatever phases a setting trains in."""
    budget = {"epochs": epochs, "train_images": epochs * n_train}
    if warm_start:
        prior = torch.load(warm_start, map_location="cpu", weights_only=True)["budget"]
        budget = {name: value + prior[name] for name, value in budget.items()}
    return budget


# ------------------------------------------------------------------ the steps


def setup(
    config: dict,
    store: ImageStore,
    frame: pd.DataFrame,
    lung_boxes: pd.DataFrame | None,
    world: World | None = None,
) -> Run:
    """Seed, build the model and optimizer, the datasets and their loaders."""
    world = world or World()
    classifier, train = config["classifier"], config["train"]
    if classifier["epochs"] < 1:
        raise ValueError(f"classifier.epochs must be at least 1, got {classifier['epochs']}")
    if train["amp"] not in ("bf16", "none"):
        raise ValueError(f"train.amp must be bf16 or none, got {train['amp']!r}")
    if train["threads"]:
        torch.set_num_threads(train["threads"])
    device = start(world, choose_device(train["device"]))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its kernels
    seed = run_seed(train["seed"], config["fold"])
    torch.manual_seed(seed)

    model = build_model(config["setting"], classifier, config["stn"])
    fingerprint = data_fingerprint(store, frame)
    if config.get("warm_start"):
        load_warm_start(model, config["warm_start"])
        fingerprint += hashlib.sha256(Path(config["warm_start"]).read_bytes()).hexdigest()
    # channels_last: the convolution layout oneDNN and cuDNN are fastest in (inputs follow
    # in _to_device)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = adam(_param_groups(model, classifier["lr"], config["stn"]), device)
    train_model = model
    if world.distributed:
        if config["stn"] and config["stn"]["warmup_epochs"]:
            raise ValueError("stn.warmup_epochs needs a single training process (DDP)")
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    train_rows = frame[frame["split"] == "train"]
    val_rows = frame[frame["split"] == "val"]
    if val_rows["label"].nunique() < 2:
        raise ValueError("the validation fold needs both classes to compute an AUC")
    side = input_side(model)
    train_set = ImageDataset(
        store,
        train_rows["path"].tolist(),
        train_rows["label"].tolist(),
        augmentation(classifier["rotation"], classifier["shear"]),
        side,
    )
    val_set = ImageDataset(store, val_rows["path"].tolist(), val_rows["label"].tolist(), side=side)
    generators = {  # the same sampler stream in every process, its own augmentation stream
        "sampler": torch.Generator().manual_seed(seed),
        "loader": torch.Generator().manual_seed(seed + 1 + world.rank),
    }
    sampler = balanced_sampler(train_set.labels, generators["sampler"])
    train_loader = _loader(
        train_set,
        local_batch_size(classifier["batch_size"], world),
        train["workers"],
        device,
        sampler=ShardedSampler(sampler, world) if world.distributed else sampler,
        generator=generators["loader"],
    )
    val_loader = _loader(val_set, classifier["batch_size"], train["workers"], device)
    val_boxes = None
    if lung_boxes is not None and isinstance(model, STN):
        val_boxes = lung_boxes.set_index("path").loc[val_set.paths, BOX].to_numpy(float)
    return Run(
        name=f"{config['setting']} fold {config['fold']}",
        config=config,
        device=device,
        model=model,
        optimizer=optimizer,
        train_set=train_set,
        val_set=val_set,
        train_loader=train_loader,
        val_loader=val_loader,
        generators=generators,
        val_boxes=val_boxes,
        fingerprint=fingerprint,
        world=world,
        train_model=train_model,
    )


def run_seed(seed: int, fold: int) -> int:
    """The seed of fold `fold`'s run under `train.seed`: one per fold, the same for every
    setting. A seed shared by all folds gives every fold the same initial weights, so the
    folds' AUCs rise and fall together and their mean moves with the seed as much as one
    fold does; the settings of a fold share it so that they differ only in the window."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def resume(run: Run, path: Path) -> Progress:
    """Load the checkpoint at `path` if it was made with this very config and data."""
    if not path.exists():
        return Progress()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["config"] != run.config or saved["fingerprint"] != run.fingerprint:
        tqdm.write(f"ignoring {path}: made with another config or data")
        return Progress()
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"]["torch"])
    if run.device.type == "cuda" and saved["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    for name, generator in run.generators.items():
        generator.set_state(saved["rng"][name])
    tqdm.write(f"resuming {path} after epoch {saved['epoch']}")
    return Progress(saved["epoch"], saved["history"], saved["best"], saved["seconds"])


def train_epoch(run: Run, epoch: int) -> float:
    """One pass over the training loader; returns the mean training loss."""
    run.train_model.train()
    _freeze_st(run, epoch)
    epochs = run.config["classifier"]["epochs"]
    loss_sum, seen = 0.0, 0
    for images, labels, _ in tqdm(
        run.train_loader,
        desc=f"{run.name} epoch {epoch}/{epochs}",
        leave=False,
        disable=not run.world.is_main,
    ):
        images, labels = _to_device(images, run.device), labels.to(run.device)
        held = _warmup_windows(run, epoch, len(labels))
        with _autocast(run.device, run.config["train"]["amp"]):
            logits = run.train_model(images) if held is None else run.train_model(images, held)
        labels = labels.repeat(len(logits) // len(labels))  # stn.reinforce_pairs: each twice
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        loss = loss + _window_penalty(run) + _equivariance(run, images, epoch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{run.name}: training loss is {loss.item()} in epoch {epoch}; lower classifier.lr"
            )
        run.optimizer.zero_grad(set_to_none=True)
        (loss + _reinforce_term(run, logits, labels)).backward()
        run.optimizer.step()
        loss_sum += loss.item() * len(labels)
        seen += len(labels)
    if run.world.distributed:  # the mean over every process's images
        totals = torch.tensor([loss_sum, seen], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(totals)
        loss_sum, seen = totals.tolist()
    return loss_sum / seen


def validate(run: Run) -> dict:
    """Validation loss and AUC; for an STN also its mean window and, with lung boxes, how
    well the windows frame the lungs (mean IoU and lung coverage)."""
    logits, st_params = _evaluate(run.model, run.val_loader, run.device)
    labels = run.val_set.labels
    loss = F.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(labels).float()
    )
    record = {"val/loss": float(loss), "val/auc": float(roc_auc_score(labels, logits))}
    if st_params is not None:
        record |= {f"val/{n}": float(v) for n, v in zip(ST_PARAMS, st_params.mean(0), strict=True)}
    if st_params is not None and run.val_boxes is not None:
        windows = stn_window(*st_params.T)
        record["val/window_iou"] = float(iou(windows, run.val_boxes).mean())
        record["val/lung_coverage"] = float(coverage(windows, run.val_boxes).mean())
    return record


def log(live, record: dict) -> None:
    for name, value in record.items():
        live.log_metric(name, value)
    live.next_step()


def keep_best(run: Run, progress: Progress, record: dict, epoch: int) -> None:
    progress.history.append(record)
    progress.epoch = epoch
    if record["val/auc"] > progress.best["auc"]:
        state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
        progress.best = {"auc": record["val/auc"], "epoch": epoch, "state": state}


def checkpoint(run: Run, progress: Progress) -> dict:
    """The whole state of the run after `progress.epoch`."""
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else None,
    } | {name: generator.get_state() for name, generator in run.generators.items()}
    return {
        "config": run.config,
        "fingerprint": run.fingerprint,
        "epoch": progress.epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "rng": rng,
        "history": progress.history,
        "best": progress.best,
        "seconds": progress.seconds,
    }


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# ------------------------------------------------------------------ helpers


def _autocast(device: torch.device, amp: str):
    """bf16 autocast for the training passes when `train.amp` is bf16 (any device)."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True, memory_format=torch.channels_last)


def _freeze_st(run: Run, epoch: int) -> None:
    """Hold the ST module still during its warm-up epochs (`stn.warmup_epochs`).

    The classifier first learns on the initial window; only then does the classification
    loss carry a signal about which part of the image helps, and the ST module follows it.
    """
    if isinstance(run.model, STN):
        learning = epoch > run.config["stn"]["warmup_epochs"]
        for parameter in run.model.st.parameters():
            parameter.requires_grad_(learning)


def _warmup_windows(run: Run, epoch: int, n: int) -> torch.Tensor | None:
    """With `stn.warmup_sides`, random windows for a warm-up batch of the STN: its
    classifier then learns to read the lungs wherever a window shows them, not only in the
    initial window, so that a window's loss later says where the lungs are (the toy task's
    recipe, `cxrstn.toy`). None otherwise: the batch goes through the module's windows."""
    stn = run.config["stn"]
    if not isinstance(run.model, STN) or not stn.get("warmup_sides"):
        return None
    if epoch > stn["warmup_epochs"]:
        return None
    return random_windows(n, stn["warmup_sides"], run.device)


def _reinforce_term(run: Run, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | float:
    """With `stn.reinforce_sigma`, the term that trains the window from the loss of each
    image's jittered window (`STN.reinforce_term`); not part of the reported loss. Without
    it nothing is computed, so the training is bit for bit what it was before the option."""
    if not isinstance(run.model, STN) or run.model.last_noise is None:
        return 0.0
    with torch.no_grad():
        losses = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return run.model.reinforce_term(losses)


def _window_penalty(run: Run) -> torch.Tensor | float:
    """Penalties on the batch's windows, off at weight 0 (neither is in the paper):

    - `stn.apex_weight` x mean(ReLU(sx / sy - stn.apex_c)): a window much wider than high
      cuts the lung apices off (the authors' follow-up constrains sx / sy the same way);
    - `stn.area_weight` x mean(sx * sy): the window shrinks until cutting the lungs costs
      the classifier more, so that its size can follow each image's lungs.
    """
    if not isinstance(run.model, STN):
        return 0.0
    stn, params = run.config["stn"], run.model.last_params
    penalty = 0.0
    if stn["apex_weight"]:
        penalty = stn["apex_weight"] * F.relu(params[:, 0] / params[:, 1] - stn["apex_c"]).mean()
    if stn.get("area_weight"):
        penalty = penalty + stn["area_weight"] * (params[:, 0] * params[:, 1]).mean()
    return penalty


def _equivariance(run: Run, images: torch.Tensor, epoch: int) -> torch.Tensor | float:
    """`stn.equivariance_weight` x `STN.equivariance_term`: the window must follow known
    random views of each training image (not in the paper). Off at weight 0, and while the
    ST module is held (`stn.warmup_epochs`)."""
    stn = run.config["stn"]
    if not isinstance(run.model, STN) or not stn.get("equivariance_weight"):
        return 0.0
    if epoch <= stn["warmup_epochs"]:
        return 0.0
    return stn["equivariance_weight"] * run.model.equivariance_term(
        images, stn["equivariance_zoom"]
    )


@torch.no_grad()
def _evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of every image in the loader's order, and the ST parameters for an STN.

    Always in float32: no autocast here, whatever `train.amp` says.
    """
    model.eval()
    logits, st_params = [], []
    for images, _, _ in loader:
        out = model(_to_device(images, device))
        logits.append(out.float().cpu())
        if isinstance(model, STN):
            st_params.append(model.last_params.float().cpu())
    params = torch.cat(st_params).numpy() if st_params else None
    return torch.cat(logits).numpy(), params


def adam(groups: list[dict], device: torch.device) -> torch.optim.Adam:
    """Adam, fused where the device has the kernel: one kernel per step instead of a dozen
    per tensor (the same update up to float rounding; bench.py (c) measures the speed-up)."""
    return torch.optim.Adam(groups, fused=device.type in ("cpu", "cuda"))


def _param_groups(model: nn.Module, lr: float, stn: dict | None) -> list[dict]:
    """One Adam group per part: the ST module may learn at its own rate (`stn.lr`).

    Adam moves each parameter by about lr per step whatever the gradient's size, so at the
    paper's lr of 1e-5 the ST parameters (in units of the image half-width) could move by
    0.1 only after 10,000 steps; a short CPU run needs a larger rate for them. The same
    rate on the layers below (measured at 1e-3 and 3e-3) kills every unit of the loc net's
    hidden layer within an epoch, and the window is then one constant for all images;
    `stn.loc_lr` gives those layers a rate of their own.
    """
    if not isinstance(model, STN):
        return [{"params": list(model.parameters()), "lr": lr}]
    groups = [{"params": list(model.classifier.parameters()), "lr": lr}]
    if stn.get("loc_lr") is None:
        return groups + [{"params": list(model.st.parameters()), "lr": stn["lr"]}]
    last = list(model.st.regressor[-1].parameters())
    body = [p for p in model.st.parameters() if all(p is not q for q in last)]
    return groups + [{"params": body, "lr": stn["loc_lr"]}, {"params": last, "lr": stn["lr"]}]


def _loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device, **kw):
    """On a GPU: pinned memory, and workers kept between epochs (on the CPU they are started
    anew each epoch, so that a resumed run draws the same augmentation as an uninterrupted
    one)."""
    cuda = device.type == "cuda"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=cuda and workers > 0,
        **kw,
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
    dataset = ImageDataset(
        store, frame["path"].tolist(), frame["label"].tolist(), side=input_side(model)
    )
    logits, st_params = _evaluate(model, _loader(dataset, batch_size, workers, device), device)
    scored = frame.reset_index(drop=True).copy()
    scored["score"] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if st_params is not None:
        for column, values in zip(ST_PARAMS, st_params.T, strict=True):
            scored[column] = values
    return scored


def window_slope(model: STN, store: ImageStore, paths: list[str], limit: int = 256) -> float:
    """`models.equivariance_slope` of an STN's module on the first `limit` of `paths`: does
    its window follow the content of each image (1) or stay where it is (0)?"""
    dataset = ImageDataset(store, paths[:limit], [0] * len(paths[:limit]), side=input_side(model))
    images = torch.stack([dataset.source(i) for i in range(len(dataset))])
    return equivariance_slope(model.st.eval(), images)


def model_file(result: TrainResult, config: dict) -> dict:
    """What `models/<setting>/fold<k>/model.pt` holds: the best weights and how they were made."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "config": config,
        "best_epoch": result.best_epoch,
        "val_auc": result.val_auc,
        "budget": result.budget,
    }


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from its `model.pt` (plain tensors; safe `weights_only` load)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved["config"]
    classifier = {**config["classifier"], "weights": None}
    model = build_model(config["setting"], classifier, config["stn"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device, memory_format=torch.channels_last).eval()  # the layout it trained in
