import copy
import math
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import cxrstn.train as train_module
from cxrstn.folds import split_of
from cxrstn.images import ImageStore, write_store
from cxrstn.models import build_model
from cxrstn.train import load_model, predict, train_run

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
CONFIG = {
    "setting": "baseline",
    "fold": 0,
    "size": SIZE,
    "classifier": {
        "arch": "vgg16",
        "in_channels": 1,
        "width": 1 / 16,
        "input_size": 32,
        "weights": None,
        "dropout": 0.5,
        "epochs": 3,
        "lr": 1e-3,
        "batch_size": 8,
        "rotation": 5,
        "shear": 3,
    },
    "stn": None,
    "train": {"device": "cpu", "seed": 0, "threads": 1, "workers": 0, "amp": "none"},
}
STN = {
    "sx_init": 1.0,
    "sy_init": 0.1,
    "tx_init": 0.0,
    "ty_init": 0.0,
    "loc_size": 16,
    "loc_channels": [4, 4, 8, 8],
    "loc_hidden": 8,
    "lr": 1e-3,
    "loc_net": "compact",
    "warmup_epochs": 0,
    "apex_weight": 0.0,
    "apex_c": 1.0,
}


def synthetic_images(n: int) -> tuple[list[str], list[int], list[np.ndarray]]:
    """Noise, plus a bright square for every abnormal (odd-numbered patient's) image."""
    rng = np.random.default_rng(0)
    paths, labels, images = [], [], []
    for i in range(n):
        label = (i // 5) % 2
        image = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
        if label:
            image[12:20, 12:20] += 150
        paths.append(f"train/patient{i:05d}/study1/view1_frontal.jpg")
        labels.append(label)
        images.append(image)
    return paths, labels, images


@pytest.fixture
def data(tmp_path, monkeypatch):
    """40 images in 5 folds of 8 (4 normal, 4 abnormal); the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    paths, labels, images = synthetic_images(40)
    write_store(tmp_path / "data" / "resized", paths, iter(images), SIZE)
    folds = pd.DataFrame(
        {"path": paths, "patient": range(40), "label": labels, "fold": [i % 5 for i in range(40)]}
    )
    folds.to_csv(tmp_path / "data" / "folds.csv", index=False)
    frame = folds.assign(split=split_of(folds["fold"], 0, 5))
    return ImageStore(tmp_path / "data" / "resized"), frame


class Killed(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 1])
def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(
    data, tmp_path, monkeypatch, capsys, workers
):
    store, frame = data
    config = copy.deepcopy(CONFIG)
    config["train"]["workers"] = workers
    whole = train_run(config, store, frame, tmp_path / "a" / "last.pt", tmp_path / "a" / "live")
    expected = predict(whole.model, store, frame, 8, torch.device("cpu"))

    save = train_module.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    checkpoint = tmp_path / "b" / "last.pt"
    with pytest.raises(Killed):
        train_run(config, store, frame, checkpoint, tmp_path / "b" / "live")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(train_module, "save_checkpoint", save)

    resumed = train_run(config, store, frame, checkpoint, tmp_path / "b" / "live")
    assert "after epoch 1" in capsys.readouterr().out
    assert resumed.history == whole.history and len(resumed.history) == 3
    assert resumed.best_epoch == whole.best_epoch
    got = predict(resumed.model, store, frame, 8, torch.device("cpu"))
    pd.testing.assert_frame_equal(got, expected)
    live_auc = pd.read_csv(
        tmp_path / "b" / "live" / "plots" / "metrics" / "val" / "auc.tsv", sep="\t"
    )
    assert live_auc["step"].tolist() == [0, 1, 2]


def test_a_checkpoint_of_another_config_is_ignored(data, tmp_path, capsys):
    store, frame = data
    checkpoint = tmp_path / "last.pt"
    one_epoch = copy.deepcopy(CONFIG)
    one_epoch["classifier"]["epochs"] = 1
    train_run(one_epoch, store, frame, checkpoint, tmp_path / "live")
    result = train_run(CONFIG, store, frame, checkpoint, tmp_path / "live")
    assert "ignoring" in capsys.readouterr().out
    assert len(result.history) == 3


def test_test_images_are_never_served_and_only_training_images_are_augmented(
    data, tmp_path, monkeypatch
):
    store, frame = data
    served: list[tuple[str, bool]] = []  # (path, augmented)

    class RecordingDataset(train_module.ImageDataset):
        def __getitem__(self, index):
            served.append((self.paths[index], self.transform is not None))
            return super().__getitem__(index)

    monkeypatch.setattr(train_module, "ImageDataset", RecordingDataset)
    config = copy.deepcopy(CONFIG) | {"setting": "stn", "stn": STN}
    train_run(config, store, frame, tmp_path / "last.pt", tmp_path / "live")
    roles = dict(zip(frame["path"], frame["split"], strict=True))
    assert {roles[p] for p, _ in served} == {"train", "val"}
    assert all(augmented == (roles[p] == "train") for p, augmented in served)
    # 24 training images drawn 3 times, 8 validation images scored 3 times.
    assert len(served) == 3 * 24 + 3 * 8


def test_the_st_module_learns_at_its_own_rate():
    torch.manual_seed(0)
    model = build_model("stn", CONFIG["classifier"], STN)
    groups = train_module._param_groups(model, 1e-4, STN | {"lr": 1e-2})
    st_ids = {id(p) for p in model.st.parameters()}
    assert [g["lr"] for g in groups] == [1e-4, 1e-2]
    assert {id(p) for p in groups[1]["params"]} == st_ids
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_training_takes_the_fast_cpu_path(data):
    """channels_last weights and inputs and one fused Adam kernel (bench.py (c) times it)."""
    store, frame = data
    run = train_module.setup(CONFIG, store, frame, None)
    assert run.optimizer.defaults["fused"]
    conv = run.model.vgg.features[2].weight  # the second conv: more than one input channel
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    batch = train_module._to_device(torch.zeros(2, 3, 8, 8), run.device)
    assert batch.is_contiguous(memory_format=torch.channels_last)


def test_each_fold_starts_from_its_own_weights_and_every_setting_of_a_fold_from_the_same(data):
    """One seed per (train.seed, fold): folds are independent draws of the initialisation,
    so their mean averages its luck out; a fold's settings share it (the identity test)."""
    store, frame = data

    def first_conv(**changes) -> torch.Tensor:
        run = train_module.setup(CONFIG | changes, store, frame, None)
        return run.model.vgg.features[0].weight.detach().clone()

    fold0 = first_conv()
    assert torch.equal(fold0, first_conv())
    assert not torch.equal(fold0, first_conv(fold=1))
    assert not torch.equal(fold0, first_conv(train=CONFIG["train"] | {"seed": 1}))
    stn = train_module.setup(CONFIG | {"setting": "stn", "stn": STN}, store, frame, None)
    assert torch.equal(stn.model.classifier.vgg.features[0].weight, fold0)
    assert len({train_module.run_seed(s, f) for s in range(3) for f in range(5)}) == 15


def run_stage(
    setting: str,
    tmp_path: Path,
    monkeypatch,
    lung_boxes: str | None = None,
    low_conf="drop",
    size: int = SIZE,
    classifier: dict | None = None,
    stn: dict | None = None,
) -> Path:
    params = {
        "data": {"lung_boxes": lung_boxes},
        "crop": {"low_conf": low_conf},
        "resize": {"size": size},
        "split": {"folds": 5},
        "classifier": CONFIG["classifier"] | {"epochs": 2} | (classifier or {}),
        "stn": stn or STN,
        "train": CONFIG["train"],
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(sys, "argv", ["train.py", "--setting", setting, "--fold", "1"])
    runpy.run_path(str(ROOT / "stages" / "train.py"), run_name="__main__")
    return tmp_path / "reports" / "runs" / setting / "fold1"


def write_truth(path: Path, paths: list[str]) -> None:
    """A phantom-like truth.csv: every image's lung box is its central half."""
    q = SIZE // 4
    rows = [(p, q, q, 3 * q, 3 * q, SIZE, SIZE) for p in paths]
    pd.DataFrame(rows, columns=["file", "x0", "y0", "x1", "y1", "width", "height"]).to_csv(
        path, index=False
    )


@pytest.mark.parametrize("setting", ["baseline", "stn"])
def test_stage_writes_predictions_metrics_and_model(data, tmp_path, monkeypatch, setting):
    store, frame = data
    write_truth(tmp_path / "truth.csv", store.paths)
    run_dir = run_stage(setting, tmp_path, monkeypatch, "truth.csv")

    predictions = pd.read_csv(run_dir / "predictions.csv")
    st_columns = ["sx", "sy", "tx", "ty"] if setting == "stn" else []
    assert predictions.columns.tolist() == ["path", "label", "score", "split", *st_columns]
    # Run 1 tests on fold 1 and validates on fold 2.
    folds = frame.set_index("path")["fold"]
    assert predictions.groupby("split")["path"].apply(lambda p: set(folds[p])).to_dict() == {
        "test": {1},
        "val": {2},
    }
    metrics = yaml.safe_load((run_dir / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (24, 8, 8)
    assert all(isinstance(v, int | float) for v in metrics.values())
    assert ("gflops_st" in metrics) == (setting == "stn")
    assert ("test_window_iou" in metrics) == (setting == "stn")
    if setting == "stn":
        # At init (sy = 0.1, full width) every window is the band y in [0.45, 0.55]:
        # IoU with the central half box = (0.5 x 0.1) / (1 x 0.1 + 0.25 - 0.05) = 1/6,
        # unless the ST module moved; its logged curve has one point per epoch.
        assert 0 <= metrics["test_window_iou"] <= 1
        assert -1 < metrics["test_equivariance_slope"] < 1  # a tiny module, barely trained
        curve = pd.read_csv(
            run_dir / "live" / "plots" / "metrics" / "val" / "window_iou.tsv", sep="\t"
        )
        assert len(curve) == 2 and curve["window_iou"].between(0, 1).all()
        assert (run_dir / "live" / "plots" / "metrics" / "val" / "sy.tsv").exists()
    assert not (tmp_path / "checkpoints").exists()
    assert (run_dir / "live" / "metrics.json").exists()

    model = load_model(tmp_path / "models" / setting / "fold1" / "model.pt")
    rows = frame[frame["path"].isin(predictions["path"])].set_index("path").loc[predictions["path"]]
    again = predict(model, store, rows.reset_index(), 8, torch.device("cpu"))
    np.testing.assert_allclose(again["score"], predictions["score"], rtol=1e-5)


def test_an_stn_held_at_the_identity_scores_every_image_like_the_baseline(
    data, tmp_path, monkeypatch
):
    """One input path: with the ST module at the identity and not learning (stn.lr 0), an
    STN run is the baseline run of the same seed, image for image, on a 64 px store
    whose 64 px copy both settings augment and sample into the classifier's 32 px."""
    store, frame = data
    (tmp_path / "data" / "resized").rename(tmp_path / "data" / "small")
    small = ImageStore(tmp_path / "data" / "small")
    big = (np.kron(small[p], np.ones((2, 2), np.uint8)) for p in small.paths)
    write_store(tmp_path / "data" / "resized", small.paths, big, 2 * SIZE)
    classifier = {"sample_size": 2 * SIZE, "epochs": 2}
    identity = STN | {"sy_init": 1.0, "lr": 0.0}
    runs = {
        setting: run_stage(setting, tmp_path, monkeypatch, None, "drop", 2 * SIZE, classifier, stn)
        for setting, stn in (("baseline", None), ("stn", identity))
    }
    baseline, stn = (pd.read_csv(runs[s] / "predictions.csv") for s in ("baseline", "stn"))
    assert baseline["path"].tolist() == stn["path"].tolist()
    assert set(stn["split"]) == {"val", "test"}
    np.testing.assert_allclose(stn["score"], baseline["score"], rtol=0, atol=1e-4)
    assert (stn[["sx", "sy", "tx", "ty"]] == [1.0, 1.0, 0.0, 0.0]).all().all()
    assert baseline["score"].std() > 1e-3  # the runs learned something to agree on


def test_every_setting_records_the_same_training_budget(data, tmp_path, monkeypatch):
    """Fair budgets: an ST warm-up is part of the STN's epochs, not on top of them, and a
    warm start adds the baseline's epochs and images to the STN's."""
    store, frame = data
    warmup = STN | {"warmup_epochs": 1}
    budgets = {}
    for setting, stn in (("baseline", None), ("stn", warmup)):
        run_dir = run_stage(setting, tmp_path, monkeypatch, stn=stn)
        metrics = yaml.safe_load((run_dir / "metrics.json").read_text())
        budgets[setting] = (metrics["epochs"], metrics["train_images"])
    assert budgets["baseline"] == budgets["stn"] == (2, 2 * 24)
    run_dir = run_stage("stn", tmp_path, monkeypatch, stn=STN | {"warm_start": "baseline"})
    metrics = yaml.safe_load((run_dir / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["train_images"]) == (4, 4 * 24)


@pytest.mark.parametrize("low_conf", ["drop", "full"])
def test_yolo_stage_scores_every_test_image_and_drops_uncropped_ones_from_training(
    data, tmp_path, monkeypatch, low_conf
):
    store, frame = data
    paths = store.paths
    write_store(tmp_path / "data" / "crops", paths, (store[p] for p in paths), SIZE)
    whole = set(paths[::4])  # every fourth image has no confident thorax box
    crops = pd.DataFrame({"path": paths, "x0": 1.0, "y0": 1.0, "x1": 9.0, "y1": 9.0})
    crops["conf"] = [0.5 if p in whole else 0.95 for p in paths]
    crops["status"] = ["whole" if p in whole else "cropped" for p in paths]
    crops.to_csv(tmp_path / "data" / "crops.csv", index=False)
    run_dir = run_stage("yolo", tmp_path, monkeypatch, low_conf=low_conf)
    metrics = yaml.safe_load((run_dir / "metrics.json").read_text())
    roles = frame.assign(split=split_of(frame["fold"], 1, 5))  # the stage runs fold 1
    expected = {
        s: int(roles.loc[roles["split"] == s, "path"].isin(whole).sum())
        for s in roles["split"].unique()
    }
    assert metrics["n_test_without_crop"] == expected["test"] > 0
    assert metrics["n_val_without_crop"] == expected["val"]
    dropped = expected["train"] if low_conf == "drop" else 0
    assert metrics["n_train_dropped"] == dropped
    assert metrics["n_train"] == (roles["split"] == "train").sum() - dropped
    predictions = pd.read_csv(run_dir / "predictions.csv")
    scored = set(roles.loc[roles["split"] != "train", "path"])
    assert set(predictions["path"]) == scored  # every val and test image, cropped or not


def test_window_quality_by_hand():
    from importlib import import_module

    sys.path.insert(0, str(ROOT / "stages"))
    try:
        window_quality = import_module("train").window_quality
    finally:
        sys.path.remove(str(ROOT / "stages"))
    # Two images; windows are the lung boxes themselves: IoU 1, coverage 1, r = 1, and the
    # windows' centres spread exactly as the boxes' do.
    boxes = pd.DataFrame(
        {
            "path": ["a", "b"],
            "x0": [0.25, 0.1],
            "y0": [0.5, 0.1],
            "x1": [0.75, 0.9],
            "y1": [1.0, 0.7],
        }
    )
    test = pd.DataFrame(
        {
            "path": ["a", "b"],
            "sx": [0.5, 0.8],
            "sy": [0.5, 0.6],
            "tx": [0.0, 0.0],
            "ty": [0.5, -0.2],
        }
    )
    quality = window_quality(test, boxes)
    assert quality == {
        "test_window_iou": 1.0,
        "test_lung_coverage": 1.0,
        "test_apex_coverage": 1.0,
        "test_r_centre": 1.0,
        "test_r_height": 1.0,
        "test_spread_centre": 1.0,
    }


def test_scoring_never_runs_under_autocast(data, tmp_path, monkeypatch):
    # With train.amp bf16 the training passes run under autocast, validation and
    # prediction never: scores are float32.
    store, frame = data
    seen = []
    build = train_module.build_model

    def probed(*args):
        model = build(*args)
        model.register_forward_pre_hook(
            lambda m, _: seen.append((m.training, torch.is_autocast_enabled("cpu")))
        )
        return model

    monkeypatch.setattr(train_module, "build_model", probed)
    config = copy.deepcopy(CONFIG)
    config["classifier"]["epochs"] = 1
    config["train"]["amp"] = "bf16"
    result = train_run(config, store, frame, tmp_path / "last.pt", tmp_path / "live")
    assert {autocast for training, autocast in seen if training} == {True}
    assert {autocast for training, autocast in seen if not training} == {False}
    seen.clear()
    scored = predict(result.model, store, frame, 8, torch.device("cpu"))
    assert seen and not any(autocast for _, autocast in seen)
    assert scored["score"].dtype == np.float64
    config["train"]["amp"] = "fp8"
    with pytest.raises(ValueError, match="train.amp must be bf16 or none"):
        train_run(config, store, frame, tmp_path / "x.pt", tmp_path / "live2")


def test_the_st_module_holds_still_during_its_warmup(data, tmp_path, monkeypatch):
    store, frame = data
    config = copy.deepcopy(CONFIG) | {"setting": "stn", "stn": STN | {"warmup_epochs": 1}}
    config["classifier"]["epochs"] = 2
    states = []
    monkeypatch.setattr(
        train_module,
        "save_checkpoint",
        lambda path, state: states.append({k: v.clone() for k, v in state["model"].items()}),
    )
    train_run(config, store, frame, tmp_path / "last.pt", tmp_path / "live")
    bias = "st.regressor.3.bias"
    torch.testing.assert_close(states[0][bias], torch.tensor([1.0, 0.1, 0.0, 0.0]))
    assert not torch.equal(states[1][bias], states[0][bias])
    classifier = "classifier.vgg.features.0.weight"
    assert not torch.equal(
        states[0][classifier],
        build_model("stn", config["classifier"], STN).state_dict()[classifier],
    )


def test_warmup_sides_train_the_classifier_on_random_windows_during_the_warmup_only(
    data, tmp_path, monkeypatch
):
    store, frame = data
    stn = STN | {"warmup_epochs": 1, "warmup_sides": [0.5, 0.9]}
    config = copy.deepcopy(CONFIG) | {"setting": "stn", "stn": stn}
    config["classifier"]["epochs"] = 2
    drawn, per_epoch = [], []
    real = train_module.random_windows

    def spy(n, sides, device):
        drawn.append(real(n, sides, device))
        return drawn[-1]

    monkeypatch.setattr(train_module, "random_windows", spy)
    monkeypatch.setattr(train_module, "save_checkpoint", lambda path, state: per_epoch.append(
        (len(drawn), state["model"]["st.regressor.3.bias"].clone())
    ))  # fmt: skip
    train_run(config, store, frame, tmp_path / "last.pt", tmp_path / "live")
    (after_warmup, bias_warm), (after_all, bias_end) = per_epoch
    batches = math.ceil((frame["split"] == "train").sum() / config["classifier"]["batch_size"])
    assert after_warmup == after_all == batches  # every warm-up batch, and none after
    windows = torch.cat(drawn)
    assert windows[:, :2].min() >= 0.5 and windows[:, :2].max() <= 0.9
    torch.testing.assert_close(bias_warm, torch.tensor([1.0, 0.1, 0.0, 0.0]))  # held
    assert not torch.equal(bias_end, bias_warm)


def test_apex_penalty_by_hand():
    torch.manual_seed(0)
    model = build_model("stn", CONFIG["classifier"], STN)
    model.last_params = torch.tensor([[1.0, 0.25, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0]])
    run = SimpleNamespace(model=model, config={"stn": STN | {"apex_weight": 0.5, "apex_c": 2.0}})
    # sx/sy = 4 and 0.5: ReLU(4 - 2) = 2 and 0; mean 1; weight 0.5
    assert float(train_module._window_penalty(run)) == pytest.approx(0.5)
    run.config["stn"]["apex_weight"] = 0.0
    assert train_module._window_penalty(run) == 0.0
    # areas 0.25 and 0.5: mean 0.375; weight 2
    run.config["stn"]["area_weight"] = 2.0
    assert float(train_module._window_penalty(run)) == pytest.approx(0.75)


def test_stn_warm_start_needs_the_folds_baseline_and_starts_from_it(data, tmp_path, monkeypatch):
    store, frame = data
    stn = STN | {"warm_start": "baseline"}
    monkeypatch.setitem(globals(), "STN", stn)
    with pytest.raises(SystemExit, match=r"models/baseline/fold1/model\.pt: no trained baseline"):
        run_stage("stn", tmp_path, monkeypatch)
    run_stage("baseline", tmp_path, monkeypatch)
    baseline = torch.load(tmp_path / "models/baseline/fold1/model.pt", weights_only=True)
    started = []
    monkeypatch.setattr(
        train_module,
        "train_epoch",
        lambda run, epoch: started.append(run.model.classifier.state_dict()) or 0.5,
    )
    run_stage("stn", tmp_path, monkeypatch)
    for name, value in baseline["state_dict"].items():
        torch.testing.assert_close(started[0][name], value)


def test_warm_start_must_be_none_or_baseline():
    assert train_module.warm_start_path(STN | {"warm_start": "none"}, 2) is None
    assert train_module.warm_start_path(STN | {"warm_start": "baseline"}, 2) == (
        "models/baseline/fold2/model.pt"
    )
    with pytest.raises(ValueError, match="stn.warm_start must be none or baseline, got 'yolo'"):
        train_module.warm_start_path(STN | {"warm_start": "yolo"}, 0)


def test_the_loc_net_below_its_last_layer_may_learn_at_its_own_rate():
    torch.manual_seed(0)
    model = build_model("stn", CONFIG["classifier"], STN)
    groups = train_module._param_groups(model, 1e-4, STN | {"lr": 1e-2, "loc_lr": 1e-3})
    assert [g["lr"] for g in groups] == [1e-4, 1e-3, 1e-2]
    last = model.st.regressor[-1]
    assert [id(p) for p in groups[2]["params"]] == [id(last.weight), id(last.bias)]
    st_ids = {id(p) for p in model.st.parameters()}
    assert {id(p) for p in groups[1]["params"] + groups[2]["params"]} == st_ids
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_yolo_stage_without_any_confident_training_crop_says_why(data, tmp_path, monkeypatch):
    store, frame = data
    paths = store.paths
    write_store(tmp_path / "data" / "crops", paths, (store[p] for p in paths), SIZE)
    crops = pd.DataFrame({"path": paths, "x0": None, "y0": None, "x1": None, "y1": None})
    crops.assign(conf=0.0, status="whole").to_csv(tmp_path / "data" / "crops.csv", index=False)
    with pytest.raises(SystemExit, match="no training image has a thorax box at crop.conf"):
        run_stage("yolo", tmp_path, monkeypatch, low_conf="drop")


def test_the_reinforce_term_trains_the_window_only_and_only_when_asked():
    """With stn.reinforce_sigma a training batch's term reaches the ST module and not the
    classifier; without it, or in evaluation, there is no term at all."""
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    classifier = params["classifier"] | {"input_size": 32, "sample_size": 64}
    stn = params["stn"] | {
        "sx_init": 0.8,
        "sy_init": 0.8,
        "scale_range": [0.3, 1.0],
        "keep_inside": True,
        "reinforce_sigma": [0.05, 0.15],
    }
    torch.manual_seed(0)
    model = build_model("stn", classifier, stn)
    images, labels = torch.rand(4, 1, 64, 64), torch.tensor([0.0, 1.0, 1.0, 0.0])
    run = SimpleNamespace(model=model)
    model.train()
    term = train_module._reinforce_term(run, model(images), labels)
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.st.parameters())
    assert all(p.grad is None for p in model.classifier.parameters())
    model.eval()
    assert train_module._reinforce_term(run, model(images), labels) == 0.0
    plain = build_model("stn", classifier, stn | {"reinforce_sigma": None}).train()
    assert train_module._reinforce_term(SimpleNamespace(model=plain), plain(images), labels) == 0.0


def test_the_equivariance_term_is_weighted_and_off_at_zero_weight_and_in_the_warmup():
    torch.manual_seed(0)
    stn = STN | {"sy_init": 0.8, "warmup_epochs": 1, "equivariance_zoom": 1.3}
    model = build_model("stn", CONFIG["classifier"], stn)
    images = torch.rand(4, 1, SIZE, SIZE)
    run = SimpleNamespace(model=model, config={"stn": stn | {"equivariance_weight": 0.5}})
    torch.manual_seed(1)
    weighted = train_module._equivariance(run, images, epoch=2).item()
    torch.manual_seed(1)
    assert weighted == pytest.approx(0.5 * model.equivariance_term(images, 1.3).item())
    assert weighted > 0  # one window for every image: the untrained module pays
    assert train_module._equivariance(run, images, epoch=1) == 0.0  # the module is held
    run.config["stn"]["equivariance_weight"] = 0.0
    assert train_module._equivariance(run, images, epoch=2) == 0.0
    baseline = SimpleNamespace(
        model=build_model("baseline", CONFIG["classifier"]), config=run.config
    )
    assert train_module._equivariance(baseline, images, epoch=2) == 0.0
