"""`cxrstn predict` and `cxrstn export-onnx` on tiny models and files written here.

The models are randomly initialised in the model.pt format the train stage writes, with a
scaled-up last layer so that scores spread over (0, 1) and rankings mean something, and
each has the out-of-distribution statistics of its features on `radiograph` images
beside it, as the train stage writes them.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from cxrstn.cli import main
from cxrstn.images import (
    ImageStore,
    attach_rows,
    new_store,
    read_image,
    resize_square,
    write_store,
)
from cxrstn.metrics import operating_threshold
from cxrstn.models import STN, build_model
from cxrstn.ood import STATS_FILE, FeatureStats, capture_features, fit_stats
from cxrstn.predict import errors_path
from cxrstn.roi import stn_window
from cxrstn.train import TrainResult, load_model, model_file, predict

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # resize.size of the tiny models
BUDGET = {"epochs": 1, "train_images": 0}  # what model.pt records of the training


def tiny_config(setting: str, fold: int = 0, st_init=(0.8, 0.7, 0.05, -0.05)) -> dict:
    classifier = {
        "arch": "vgg16", "width": 0.0625, "input_size": 32, "weights": None, "dropout": 0.0,
        "epochs": 1, "lr": 1e-3, "batch_size": 8, "rotation": 0, "shear": 0,
    }  # fmt: skip
    stn = None
    if setting == "stn":
        sx, sy, tx, ty = st_init
        stn = {
            "sx_init": sx, "sy_init": sy, "tx_init": tx, "ty_init": ty, "loc_size": 16,
            "loc_channels": [4, 4, 4, 4], "loc_hidden": 8, "lr": 1e-3,
        }  # fmt: skip
    train = {"device": "cpu", "seed": 0, "threads": 1, "workers": 0}
    return {"setting": setting, "fold": fold, "size": SIZE, "classifier": classifier,
            "stn": stn, "train": train}  # fmt: skip


def tiny_model(setting: str, seed: int, st_noise: float = 0.02, **kw) -> tuple:
    torch.manual_seed(seed)
    config = tiny_config(setting, **kw)
    model = build_model(setting, config["classifier"], config["stn"]).eval()
    classifier = model.classifier if isinstance(model, STN) else model
    with torch.no_grad():
        classifier.vgg.classifier[-1].weight.mul_(300)
        if isinstance(model, STN):
            model.st.regressor[-1].weight.normal_(0, st_noise)
    return model, config


def save_model(path: Path, setting: str, seed: int, **kw) -> torch.nn.Module:
    model, config = tiny_model(setting, seed, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model_file(TrainResult(model, 1, 0.5, [], 0.0, 0.0, BUDGET), config), path)
    save_stats(path.parent / STATS_FILE, model)
    return model


def image_features(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    """The out-of-distribution features of stored-size images, each in a pass of its own
    (as `cxrstn predict` scores)."""
    with torch.no_grad(), capture_features(model) as captured:
        for image in images:
            model(torch.tensor(image).float().div(255.0)[None, None])
    return torch.cat(captured).numpy().astype(np.float64)


def save_stats(path: Path, model: torch.nn.Module) -> None:
    """Statistics as the train stage writes them: fitted on 40 `radiograph` images, the
    threshold from 20 others."""
    images = [resize_square(radiograph(1000 + k), SIZE) for k in range(60)]
    features = image_features(model, images)
    fit_stats(features[:40], features[40:]).save(path)


def make_models(root: Path, folds: int = 3, threshold: float = 0.5) -> Path:
    models = root / "models"
    entries = {}
    for setting in ("stn", "baseline"):
        for fold in range(folds):
            save_model(models / setting / f"fold{fold}" / "model.pt", setting, 10 * fold + 1)
        entries[setting] = {
            "folds": {str(k): threshold for k in range(folds)},
            "ensemble": threshold,
        }
    write_thresholds(models, entries)
    return models


def write_thresholds(models: Path, settings: dict) -> None:
    record = {"recall": 0.95, "threshold_on": "test", "ensemble_rule": "test", "settings": settings}
    (models / "thresholds.json").write_text(json.dumps(record))


def radiograph(seed: int, shape=(110, 90)) -> np.ndarray:
    """A smooth random uint8 image with a bright blob: different images, different scores."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((6, 5)).astype(np.float32)
    image = np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.BILINEAR))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    cy, cx = rng.uniform(0.2, 0.8, 2) * shape
    image = image + 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 * shape[0] ** 2))
    return np.clip(image / image.max() * 255, 0, 255).astype(np.uint8)


def dicom(values: np.ndarray, **attributes) -> Dataset:
    """A Secondary Capture DICOM holding `values` (uint16) uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = values.astype(np.uint16).tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def run_predict(tmp_path: Path, *args: str, out: str = "results.csv") -> pd.DataFrame:
    main(["predict", *args, "--out", str(tmp_path / out), "--device", "cpu"])
    return pd.read_csv(tmp_path / out)


# --- preprocessing and scores identical to the pipeline's --------------------------------


@pytest.mark.parametrize("setting", ["stn", "baseline"])
def test_scores_equal_the_pipeline_scores_of_the_same_files(tmp_path, setting, capsys):
    """Original files -> the resize stage's own worker -> image store -> train.predict (the
    train stage's scoring, batch 8) must give the scores `cxrstn predict` gives the files."""
    models = make_models(tmp_path, folds=1)
    originals = tmp_path / "originals"
    originals.mkdir()
    files = []
    for seed in range(6):
        image = radiograph(seed, shape=(110 + 7 * seed, 90 + 5 * seed))
        file = originals / (f"film{seed}.png" if seed % 2 else f"film{seed}.jpg")
        Image.fromarray(image).save(file)
        files.append(file)
    sixteen = radiograph(9).astype(np.uint16) * 16  # 12-bit values in a 16-bit PNG
    Image.fromarray(sixteen).save(originals / "film16.png")
    files.append(originals / "film16.png")

    resize_into = runpy.run_path(str(ROOT / "stages" / "resize.py"))["resize_into"]
    keys = [file.name for file in files]
    with new_store(tmp_path / "resized", keys, SIZE) as store:
        attach_rows(store.images_file)  # as the stage's workers do
        for row, file in enumerate(files):
            assert resize_into((row, file), SIZE)[0] is None  # no reason to exclude it
            store.keep(row)
    model_path = models / setting / "fold0/model.pt"
    batch_size = torch.load(model_path, weights_only=True)["config"]["classifier"]["batch_size"]
    pipeline = predict(
        load_model(model_path),
        ImageStore(tmp_path / "resized"),
        pd.DataFrame({"path": keys, "label": 0}),
        batch_size,
        torch.device("cpu"),
    )
    results = run_predict(
        tmp_path, str(originals), "--models", str(models), "--setting", setting, "--fold", "0"
    )
    ours = dict(zip(results["path"].map(lambda p: Path(p).name), results["score"], strict=True))
    assert len(ours) == len(files)
    expected = dict(zip(pipeline["path"], pipeline["score"], strict=True))
    for key in keys:
        assert ours[key] == pytest.approx(expected[key], abs=1e-5)
    assert np.ptp(results["score"]) > 0.05  # the images really score differently
    if setting == "stn":
        by_key = results.assign(key=results["path"].map(lambda p: Path(p).name)).set_index("key")
        for column in ("sx", "sy", "tx", "ty"):
            want = pipeline.set_index("path")[column]
            assert by_key.loc[want.index, column].to_numpy() == pytest.approx(want, abs=1e-6)


# --- input kinds -------------------------------------------------------------------------


def test_dicom_monochrome1_is_inverted(tmp_path):
    values = np.tile(np.arange(0, 4000, 4000 / 64), (48, 1)).astype(np.uint16)
    dicom(values, PhotometricInterpretation="MONOCHROME1").save_as(
        tmp_path / "m1.dcm", enforce_file_format=True
    )
    image = read_image(tmp_path / "m1.dcm")
    scaled = np.rint(values.astype(float) * (255 / values.max()))
    assert np.array_equal(image, (255 - scaled).astype(np.uint8))
    assert image[0, 0] == 255 and image[0, -1] == 0  # low values bright


def test_dicom_rescale_is_applied_before_the_window(tmp_path):
    """Raw 0..1000 with slope 2 and intercept -1000 is -1000..1000; the window centre 0,
    width 1001 shows -500..500. Without the rescale the window would cover raw 0..500."""
    raw = np.tile(np.arange(0, 1001, 1000 / 99).round(), (40, 1)).astype(np.uint16)
    file = tmp_path / "ct-like"  # no suffix: found by its DICOM preamble
    dicom(raw, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1001).save_as(
        file, enforce_file_format=True
    )
    image = read_image(file)
    value = raw.astype(float) * 2 - 1000
    windowed = np.clip((value - (0 - 0.5)) / 1000 + 0.5, 0, 1)  # DICOM's linear window
    assert np.abs(image.astype(int) - np.rint(windowed * 255)).max() <= 1
    assert image[0, 0] == 0 and image[0, -1] == 255
    assert image[0, 49] == pytest.approx(127, abs=3)  # raw 505 -> 10 -> mid-grey


def test_compressed_dicom_reads_and_an_undecodable_syntax_is_named(tmp_path):
    values = (radiograph(3).astype(np.uint16) * 16).astype(np.uint16)
    ds = dicom(values)
    ds.compress(JPEG2000Lossless, values)
    ds.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    plain = tmp_path / "plain.dcm"
    dicom(values).save_as(plain, enforce_file_format=True)
    assert np.array_equal(read_image(tmp_path / "j2k.dcm"), read_image(plain))

    video = dicom(values)
    video.file_meta.TransferSyntaxUID = MPEG2MPML
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3 not really mpeg"])
    video.save_as(tmp_path / "video.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match=r"video\.dcm: DICOM transfer syntax MPEG2 Main Profile"):
        read_image(tmp_path / "video.dcm")


def write_every_kind(folder: Path) -> dict[str, np.ndarray]:
    """One file of each supported kind and what read_image must make of it (8-bit gray)."""
    folder.mkdir(parents=True)
    expected = {}
    gray = radiograph(1)
    Image.fromarray(gray).save(folder / "gray8.png")
    expected["gray8.png"] = gray
    sixteen = radiograph(2).astype(np.uint16) * 16 + 8  # 12-bit range
    Image.fromarray(sixteen).save(folder / "gray16.png")
    expected["gray16.png"] = read_image(folder / "gray16.png")
    assert np.abs(expected["gray16.png"].astype(int) - sixteen / 4095 * 255).max() <= 1
    palette = Image.fromarray(radiograph(3)).convert("P")
    palette.save(folder / "palette.png")
    expected["palette.png"] = np.asarray(palette.convert("L"))
    rgb = np.repeat(radiograph(4)[:, :, None], 3, axis=2)
    (folder / "sub").mkdir()
    Image.fromarray(rgb).save(folder / "sub" / "rgb.png")
    expected["rgb.png"] = radiograph(4)
    Image.fromarray(radiograph(5)).save(folder / "sub" / "film.jpg", quality=95)
    expected["film.jpg"] = read_image(folder / "sub" / "film.jpg")
    values = radiograph(6).astype(np.uint16) * 10
    dicom(values, PhotometricInterpretation="MONOCHROME1").save_as(
        folder / "sub" / "mono1.dcm", enforce_file_format=True
    )
    low, high = float(values.min()), float(values.max())
    expected["mono1.dcm"] = 255 - np.rint((values - low) * (255 / (high - low))).astype(np.uint8)
    dicom(values).save_as(folder / "sub" / "IM0001", enforce_file_format=True)  # no suffix
    expected["IM0001"] = np.rint((values - low) * (255 / (high - low))).astype(np.uint8)
    return expected


def test_folder_of_every_kind_scores_each_image_as_its_pixels(tmp_path, capsys):
    """Each file scores exactly as a plain PNG of the pixels read_image must produce;
    a corrupt file is listed with its reason, a text file counted, nothing stops the run."""
    models = make_models(tmp_path)
    folder = tmp_path / "films"
    expected = write_every_kind(folder)
    good = (folder / "gray8.png").read_bytes()
    (folder / "sub" / "corrupt.png").write_bytes(good[: len(good) // 3])
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")

    results = run_predict(tmp_path, str(folder), "--models", str(models))
    output = capsys.readouterr()
    names = results["path"].map(lambda p: Path(p).name)
    assert sorted(names) == sorted(expected)

    reference = tmp_path / "reference"
    reference.mkdir()
    for name, pixels in expected.items():
        Image.fromarray(pixels).save(reference / f"{name}.png")
    again = run_predict(tmp_path, str(reference), "--models", str(models), out="ref.csv")
    want = dict(zip(again["path"].map(lambda p: Path(p).name[:-4]), again["score"], strict=True))
    for name, value in zip(names, results["score"], strict=True):
        assert value == pytest.approx(want[name], abs=1e-9), name

    errors = pd.read_csv(errors_path(tmp_path / "results.csv"))
    reasons = dict(zip(errors["path"].map(lambda p: Path(p).name), errors["error"], strict=True))
    assert set(reasons) == {"corrupt.png", "empty.dcm"}
    assert reasons["corrupt.png"].startswith("corrupt or truncated image")
    assert reasons["empty.dcm"] == "empty file (0 bytes)"
    assert "ignored 1 file(s) in the folders that are no image (.txt)" in output.out
    assert "2 input(s) could not be scored" in output.err and "corrupt.png" in output.err


def test_csv_of_paths_named_files_and_missing_ones(tmp_path):
    models = make_models(tmp_path)
    films = tmp_path / "lists" / "films"
    films.mkdir(parents=True)
    for seed in range(3):
        Image.fromarray(radiograph(seed)).save(films / f"f{seed}.png")
    listing = tmp_path / "lists" / "worklist.csv"
    pd.DataFrame(
        {"study": ["a", "b", "c", "d"], "path": ["films/f0.png", "films/f1.png", "films/gone.png",
                                                  str(films / "f2.png")]}
    ).to_csv(listing, index=False)  # fmt: skip
    first_column = tmp_path / "first.csv"
    pd.DataFrame({"Path": [str(films / "f1.png")]}).to_csv(first_column, index=False)
    results = run_predict(
        tmp_path, str(listing), str(first_column), str(films / "f0.png"), "--models", str(models)
    )
    assert sorted(Path(p).name for p in results["path"]) == ["f0.png", "f1.png", "f2.png"]
    errors = pd.read_csv(errors_path(tmp_path / "results.csv"))
    assert errors["path"].tolist() == ["films/gone.png"]
    assert errors["error"].tolist() == ["file not found"]


# --- ranking, threshold, ensemble, overlays ----------------------------------------------


def films(tmp_path: Path, count: int = 8) -> Path:
    folder = tmp_path / "films"
    folder.mkdir()
    for seed in range(count):
        Image.fromarray(radiograph(seed)).save(folder / f"film{seed}.png")
    return folder


def test_rows_are_ranked_by_score_and_the_stored_threshold_applied(tmp_path):
    models = make_models(tmp_path)
    folder = films(tmp_path)
    first = run_predict(tmp_path, str(folder), "--models", str(models), "--threshold", "0.5")
    threshold = float(np.median(first["score"]))
    write_thresholds(models, {"stn": {"folds": {"0": 0.0}, "ensemble": threshold}})
    results = run_predict(tmp_path, str(folder), "--models", str(models))
    assert list(results.columns[:4]) == ["path", "score", "abnormal", "rank"]
    assert (np.diff(results["score"]) <= 0).all()
    assert results["rank"].tolist() == list(range(1, len(results) + 1))
    assert results["abnormal"].tolist() == (results["score"] >= threshold).astype(int).tolist()
    assert 0 < results["abnormal"].sum() < len(results)
    single = run_predict(tmp_path, str(folder), "--models", str(models), "--fold", "0")
    assert single["abnormal"].all()  # fold 0's stored threshold is 0


def test_ensemble_score_is_the_mean_of_the_fold_scores(tmp_path):
    models = make_models(tmp_path, folds=3)
    folder = films(tmp_path, 5)
    ensemble = run_predict(tmp_path, str(folder), "--models", str(models)).set_index("path")
    per_fold = [
        run_predict(tmp_path, str(folder), "--models", str(models), "--fold", str(k),
                    out=f"fold{k}.csv").set_index("path")["score"]
        for k in range(3)
    ]  # fmt: skip
    mean = pd.concat(per_fold, axis=1).mean(axis=1)
    assert ensemble["score"].to_numpy() == pytest.approx(mean[ensemble.index].to_numpy(), 1e-12)
    for k in range(3):
        assert ensemble[f"score_fold{k}"].to_numpy() == pytest.approx(
            per_fold[k][ensemble.index].to_numpy(), abs=1e-12
        )
    assert np.ptp(pd.concat(per_fold, axis=1).to_numpy(), axis=1).max() > 0.01  # folds differ


def test_overlay_shows_the_stn_window_where_theta_puts_it(tmp_path):
    models = tmp_path / "models"
    save_model(models / "stn/fold0/model.pt", "stn", 1, st_noise=0.0, st_init=(0.5, 0.4, 0.2, -0.3))
    write_thresholds(models, {"stn": {"folds": {"0": 0.5}, "ensemble": 0.5}})
    folder = tmp_path / "films"
    folder.mkdir()
    Image.fromarray(np.full((400, 300), 128, np.uint8)).save(folder / "flat.png")
    results = run_predict(tmp_path, str(folder), "--models", str(models), "--fold", "0",
                          "--overlays", str(tmp_path / "overlays"))  # fmt: skip
    row = results.iloc[0]
    assert (row["sx"], row["sy"], row["tx"], row["ty"]) == pytest.approx((0.5, 0.4, 0.2, -0.3))
    assert Path(row["overlay"]) == tmp_path / "overlays" / "flat.png"
    picture = np.asarray(Image.open(row["overlay"]).convert("RGB")).astype(int)
    assert picture.shape == (400, 300, 3)
    x0, y0, x1, y1 = stn_window(0.5, 0.4, 0.2, -0.3)
    assert (x0, y0, x1, y1) == pytest.approx((0.35, 0.15, 0.85, 0.55))
    red = (picture[:, :, 0] > 200) & (picture[:, :, 1] < 60) & (picture[:, :, 2] < 60)
    ys, xs = np.nonzero(red[100:, :])  # below the caption
    assert xs.min() == pytest.approx(x0 * 300, abs=3) and xs.max() == pytest.approx(x1 * 300, abs=3)
    assert ys.max() + 100 == pytest.approx(y1 * 400, abs=3)


# --- thresholds stored by the evaluate stage ---------------------------------------------


def test_evaluate_stores_fold_and_ensemble_thresholds(tmp_path, make_project, run_stage):
    make_project(tmp_path)
    run_stage("evaluate", tmp_path)
    stored = json.loads((tmp_path / "models/thresholds.json").read_text())
    assert stored["recall"] == 0.95 and stored["threshold_on"] == "test"
    folds = pd.read_csv(tmp_path / "reports/eval/folds.csv")
    for setting in ("baseline", "yolo", "stn"):
        pooled = []
        for fold in range(3):
            predictions = pd.read_csv(
                tmp_path / f"reports/runs/{setting}/fold{fold}/predictions.csv"
            )
            test = predictions[predictions["split"] == "test"]
            pooled.append(test)
            row = folds[(folds["setting"] == setting) & (folds["fold"] == fold)
                        & (folds["threshold_on"] == "test")]  # fmt: skip
            assert stored["settings"][setting]["folds"][str(fold)] == row["threshold"].item()
            assert stored["settings"][setting]["folds"][str(fold)] == operating_threshold(
                test["label"], test["score"], 0.95
            )
        pooled = pd.concat(pooled)
        assert pooled["path"].is_unique  # every image once
        ensemble = stored["settings"][setting]["ensemble"]
        assert ensemble == operating_threshold(pooled["label"], pooled["score"], 0.95)
        positives = pooled[pooled["label"] == 1]["score"]
        assert (positives >= ensemble).mean() >= 0.95
        assert (positives > ensemble).mean() < 0.95  # the highest such threshold


# --- ONNX export -------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["stn", "baseline"])
def test_onnx_scores_match_pytorch(tmp_path, setting, capsys):
    import onnxruntime

    from cxrstn.export import check_images, reference_scores

    images = torch.cat([check_images(SIZE, 4, seed=7), torch.rand(4, 1, SIZE, SIZE)])
    # seed 1: a loc net whose windows differ between these images and stay on them
    model, config = tiny_model(setting, 1, st_noise=3.0, st_init=(0.5, 0.5, 0.0, 0.0))
    if setting == "stn":
        # windows of side about 0.5 either way: where a k taken from each batch's largest
        # window (as sampling once did) would have been 1 for some images and 2 for others
        with torch.no_grad():
            model.st.regressor[-1].bias[0] -= model.st.params(images)[:, 0].median() - 0.5
    model_path = tmp_path / "model.pt"
    torch.save(model_file(TrainResult(model, 1, 0.5, [], 0.0, 0.0, BUDGET), config), model_path)
    main(["export-onnx", str(model_path), str(tmp_path / "model.onnx")])
    assert "ONNX Runtime matches PyTorch" in capsys.readouterr().out

    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    outputs = session.run(None, {"image": images.numpy()})
    expected = reference_scores(load_model(model_path), images)
    assert outputs[0] == pytest.approx(expected, abs=1e-4)
    assert np.ptp(expected) > 0.01
    if setting == "stn":
        with torch.no_grad():
            params = model.st.params(images)
        assert outputs[1] == pytest.approx(params.numpy(), abs=1e-5)
        sides = np.abs(params[:, 0].numpy())
        assert sides.min() < 0.5 < sides.max()  # windows on both sides of 0.5 in one batch


# --- yolo setting ------------------------------------------------------------------------


def save_detector(path: Path) -> None:
    """An untrained one-file detector in the train_detector stage's format, its class
    bias raised so that it reports boxes with confidence near 1."""
    from ultralytics import YOLO

    from cxrstn.detector import setup_ultralytics

    setup_ultralytics()
    torch.manual_seed(0)
    model = YOLO("yolov5n.yaml").model
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias.fill_(6.0)
    args = {"task": "detect", "imgsz": 64, "single_cls": True}
    model.args = dict(args)
    torch.save({"model": model, "train_args": args}, path)


def test_yolo_setting_detects_and_crops_as_the_crop_stage(tmp_path):
    from cxrstn.detector import detect, load_detector
    from cxrstn.thorax import crop_table, crop_to_thorax

    models = tmp_path / "models"
    save_model(models / "yolo/fold0/model.pt", "yolo", 1)
    write_thresholds(models, {"yolo": {"folds": {"0": 0.5}, "ensemble": 0.5}})
    save_detector(models / "detector.pt")
    folder = films(tmp_path, 4)
    files = sorted(folder.glob("*.png"))
    params = {
        "detector": {"imgsz": 64, "device": "cpu", "threads": 1},
        "crop": {"conf": 0.9, "tta": False},
    }
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    args = [str(folder), "--models", str(models), "--setting", "yolo", "--fold", "0"]
    args += ["--params", str(tmp_path / "params.yaml"), "--overlays", str(tmp_path / "overlays")]
    results = run_predict(tmp_path, *args).set_index("path")

    resized = [resize_square(read_image(file), SIZE) for file in files]
    detections = detect(load_detector(models / "detector.pt"), resized, 64, 4, "cpu", threads=1)
    table = crop_table([str(f) for f in files], detections, 0.9)
    assert (table["status"] == "cropped").all()  # the raised bias: every box near conf 1
    crops = [  # cut from the original file, as the crop stage does
        crop_to_thorax(read_image(file), (row.x0, row.y0, row.x1, row.y1), SIZE, SIZE)
        for file, row in zip(files, table.itertuples(), strict=True)
    ]
    write_store(tmp_path / "crops", table["path"].tolist(), iter(crops), SIZE)
    expected = predict(
        load_model(models / "yolo/fold0/model.pt"),
        ImageStore(tmp_path / "crops"),
        table[["path"]].assign(label=0),
        8,
        torch.device("cpu"),
    ).set_index("path")
    assert results.loc[expected.index, "score"].to_numpy() == pytest.approx(
        expected["score"].to_numpy(), abs=1e-5
    )
    assert (results["crop"] == "cropped").all()
    width, height = 90, 110  # radiograph()'s shape: the box is given in original pixels
    for row in table.itertuples():
        got = results.loc[row.path]
        assert got["x0"] == pytest.approx(row.x0 * width / SIZE, abs=0.1)
        assert got["y1"] == pytest.approx(row.y1 * height / SIZE, abs=0.1)
        assert got["conf"] == pytest.approx(row.conf)
        assert Path(got["overlay"]).is_file()

    params["crop"]["conf"] = 1.0  # no box reaches it: every image classified uncropped
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    uncropped = run_predict(tmp_path, *args[:-2], out="full.csv").set_index("path")
    assert (uncropped["crop"] == "whole").all()
    write_store(tmp_path / "full", table["path"].tolist(), iter(resized), SIZE)
    whole = predict(
        load_model(models / "yolo/fold0/model.pt"),
        ImageStore(tmp_path / "full"),
        table[["path"]].assign(label=0),
        8,
        torch.device("cpu"),
    ).set_index("path")
    assert uncropped.loc[whole.index, "score"].to_numpy() == pytest.approx(
        whole["score"].to_numpy(), abs=1e-5
    )


# --- the input check: not_radiograph, out_of_distribution --------------------------------


def exit_code(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_non_radiographs_are_scored_unranked_never_called_and_listed_last(tmp_path, capsys):
    from cxrstn.nonradiographs import write_examples

    models = make_models(tmp_path, threshold=0.0)  # every radiograph is called abnormal
    folder = films(tmp_path, 5)
    refused = {f.name for f in write_examples(folder / "non")}
    args = [str(folder), "--models", str(models), "--device", "cpu"]
    assert exit_code(["predict", *args, "--out", str(tmp_path / "results.csv")]) == 0
    results = pd.read_csv(tmp_path / "results.csv")
    summary = [line for line in capsys.readouterr().out.splitlines() if "input check" in line]

    names = results["path"].map(lambda p: Path(p).name)
    is_refused = names.isin(refused)
    assert is_refused.sum() == len(refused) == 11
    assert list(results.columns[:7]) == [
        "path", "score", "abnormal", "rank", "input_check", "ood_ratio", "check_reason"
    ]  # fmt: skip
    assert (results.loc[is_refused, "input_check"] == "not_radiograph").all()
    assert results.loc[~is_refused, "input_check"].isin(["ok", "out_of_distribution"]).all()
    assert is_refused.tolist() == [False] * 5 + [True] * 11  # every radiograph first
    assert results.loc[~is_refused, "rank"].tolist() == [1, 2, 3, 4, 5]
    assert results.loc[is_refused, "rank"].isna().all()
    assert (results.loc[is_refused, "abnormal"] == 0).all()  # scored, never called
    assert (results.loc[~is_refused, "abnormal"] == 1).all()
    assert results.loc[is_refused, "score"].between(0, 1).all()
    assert (np.diff(results.loc[is_refused, "score"]) <= 0).all()
    assert (results.loc[is_refused, "check_reason"].str.len() > 0).all()

    counts = results["input_check"].value_counts()
    assert summary == [
        f"input check: {counts.get('ok', 0)} ok, 11 not_radiograph, "
        f"{counts.get('out_of_distribution', 0)} out_of_distribution"
    ]
    assert exit_code(["predict", *args, "--out", str(tmp_path / "s.csv"), "--strict"]) == 3
    assert len(pd.read_csv(tmp_path / "s.csv")) == 16  # the worklist is still written
    for file in (folder / "non").iterdir():
        file.unlink()
    assert exit_code(["predict", *args, "--out", str(tmp_path / "s.csv"), "--strict"]) == 0


def test_out_of_distribution_rows_keep_score_call_and_rank(tmp_path):
    """ood_ratio is the mean over the fold models of distance / threshold, computed here
    from each model's features; a row above 1 is flagged and keeps its place."""
    models = make_models(tmp_path, folds=3)
    folder = films(tmp_path, 8)
    files = sorted(folder.iterdir())
    stored = [resize_square(read_image(file), SIZE) for file in files]
    ratios = []
    for k in range(3):
        model = load_model(models / f"stn/fold{k}/model.pt")
        stats = FeatureStats.load(models / f"stn/fold{k}" / STATS_FILE)
        ratios.append(stats.distances(image_features(model, stored)) / stats.threshold)
    expected = np.mean(ratios, axis=0)
    middle = float(np.median(expected))  # thresholds scaled so that half the films exceed
    for k in range(3):
        stats = FeatureStats.load(models / f"stn/fold{k}" / STATS_FILE)
        stats.threshold *= middle
        stats.save(models / f"stn/fold{k}" / STATS_FILE)

    results = run_predict(tmp_path, str(folder), "--models", str(models), "--threshold", "0.5")
    results = results.set_index(results["path"].map(lambda p: Path(p).name))
    want = pd.Series(expected / middle, index=[f.name for f in files])
    assert results.loc[want.index, "ood_ratio"].to_numpy() == pytest.approx(want, rel=1e-4)
    flagged = results["input_check"] == "out_of_distribution"
    assert flagged.tolist() == (results["ood_ratio"] > 1).tolist() and flagged.sum() == 4
    assert (results.loc[~flagged, "input_check"] == "ok").all()
    assert results.loc[flagged, "check_reason"].str.startswith("feature distance").all()
    assert results.sort_values("rank")["score"].is_monotonic_decreasing  # flags ignored
    assert results["rank"].tolist() == list(range(1, 9))
    assert results["abnormal"].tolist() == (results["score"] >= 0.5).astype(int).tolist()


def test_a_dicom_and_a_png_of_the_same_pixels_get_the_same_check(tmp_path):
    from cxrstn.nonradiographs import examples

    models = make_models(tmp_path, folds=2)
    kinds = {name.split(".")[0]: pixels for name, pixels in examples(3).items()}
    kinds = {k: v for k, v in kinds.items() if v.ndim == 2}  # DICOM here is grayscale
    kinds |= {f"film{seed}": radiograph(seed) for seed in range(3)}
    for name, pixels in kinds.items():
        if name != "flat_grey":  # 0..255: DICOM's min-max scaling leaves the pixels as they are
            pixels[0, 0], pixels[-1, -1] = 0, 255
    for name, pixels in kinds.items():
        (tmp_path / "png").mkdir(exist_ok=True)
        (tmp_path / "dcm").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "png" / f"{name}.png")
        dicom(pixels.astype(np.uint16)).save_as(
            tmp_path / "dcm" / f"{name}.dcm", enforce_file_format=True
        )
    columns = ["input_check", "check_reason", "ood_ratio", "score"]
    found = {}
    for kind in ("png", "dcm"):
        results = run_predict(
            tmp_path, str(tmp_path / kind), "--models", str(models), out=f"{kind}.csv"
        )
        found[kind] = results.set_index(results["path"].map(lambda p: Path(p).stem))[columns]
    png, dcm = found["png"].sort_index(), found["dcm"].sort_index()
    assert png.index.tolist() == sorted(kinds)
    assert png["input_check"].tolist() == dcm["input_check"].tolist()
    assert png["check_reason"].fillna("").tolist() == dcm["check_reason"].fillna("").tolist()
    films_only = png.index.str.startswith("film")
    assert (png.loc[~films_only, "input_check"] == "not_radiograph").all()
    assert (png.loc[films_only, "input_check"] != "not_radiograph").all()
    unflat = png.index != "flat_grey"  # 128 in the PNG, 0 in the DICOM: flat either way
    for column in ("ood_ratio", "score"):
        assert png.loc[unflat, column].to_numpy() == pytest.approx(
            dcm.loc[unflat, column].to_numpy(), rel=1e-6
        )


def test_the_overlay_caption_says_the_check(tmp_path, monkeypatch):
    import cxrstn.predict as predict_module

    captions = {}
    drawn = predict_module.overlay

    def recording(image, windows, box, crop, caption):
        captions[int(image.shape[0])] = caption
        return drawn(image, windows, box, crop, caption)

    monkeypatch.setattr(predict_module, "overlay", recording)
    models = make_models(tmp_path, folds=1, threshold=0.0)
    folder = tmp_path / "films"
    folder.mkdir()
    Image.fromarray(radiograph(0, shape=(110, 90))).save(folder / "film.png")
    Image.fromarray(np.where(radiograph(1, shape=(120, 90)) > 128, 255, 0).astype(np.uint8)).save(
        folder / "mask.png"
    )
    results = run_predict(tmp_path, str(folder), "--models", str(models),
                          "--overlays", str(tmp_path / "overlays"))  # fmt: skip
    stems = results["path"].map(lambda p: Path(p).stem)
    checks = dict(zip(stems, results["input_check"], strict=True))
    assert checks["mask"] == "not_radiograph"
    film_call, film_check = captions[110].splitlines()
    assert film_call.startswith("ABNORMAL") and film_check == f"input check: {checks['film']}"
    assert captions[120].splitlines() == [
        f"not called {results.set_index('input_check').loc['not_radiograph', 'score']:.3f} "
        "(threshold 0.000)",
        "input check: not_radiograph",
    ]
    picture = np.asarray(Image.open(tmp_path / "overlays" / "mask.png").convert("RGB"))
    yellow = (picture[:, :, 0] > 200) & (picture[:, :, 1] > 200) & (picture[:, :, 2] < 80)
    rows = np.nonzero(yellow.any(axis=1))[0]
    assert rows.max() > 2 * rows.min()  # two lines of caption, one below the other


def test_no_input_check_needs_no_statistics_and_a_missing_file_is_named(tmp_path, capsys):
    models = make_models(tmp_path, folds=2)
    folder = films(tmp_path, 3)
    (models / "stn/fold1" / STATS_FILE).unlink()
    args = ["predict", str(folder), "--models", str(models), "--device", "cpu"]
    assert exit_code([*args, "--out", str(tmp_path / "a.csv")]) == 1
    error = capsys.readouterr().err
    assert f"{models / 'stn/fold1' / STATS_FILE}: no out-of-distribution statistics" in error
    assert "--no-input-check" in error
    assert exit_code([*args, "--out", str(tmp_path / "b.csv"), "--no-input-check"]) == 0
    assert "input check: off (--no-input-check)" in capsys.readouterr().out
    results = pd.read_csv(tmp_path / "b.csv")
    assert "input_check" not in results.columns and results["rank"].tolist() == [1, 2, 3]
