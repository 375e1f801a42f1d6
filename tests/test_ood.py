"""The out_of_distribution check (cxrstn/ood.py): the features a model gives, the fitted
statistics and their threshold, the file beside each model, and the train stage writing it."""

import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.covariance import LedoitWolf

from cxrstn.folds import split_of
from cxrstn.images import ImageStore, write_store
from cxrstn.models import STN, build_model, normalise, sample_window
from cxrstn.ood import (
    QUANTILE,
    STATS_FILE,
    FeatureStats,
    capture_features,
    feature_count,
    fit_stats,
    store_features,
)
from cxrstn.train import load_model

CLASSIFIER = {
    "arch": "vgg16", "width": 0.0625, "input_size": 32, "weights": None, "dropout": 0.0,
    "norm": "batch",
}  # fmt: skip
ST = {
    "sx_init": 0.8, "sy_init": 0.7, "tx_init": 0.0, "ty_init": 0.0, "loc_size": 16,
    "loc_channels": [4, 4, 4, 4], "loc_hidden": 8, "lr": 1e-3,
}  # fmt: skip


def correlated(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    mixing = np.array([[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0],
                       [0.0, 0.0, 0.5, 0.3]])  # fmt: skip
    return rng.normal(shift, 1.0, (n, 4)) @ mixing.T


def test_distances_are_the_mahalanobis_distances_of_the_ledoit_wolf_fit():
    rng = np.random.default_rng(0)
    fit, held_out, new = correlated(rng, 300), correlated(rng, 100), correlated(rng, 7)
    stats = fit_stats(fit, held_out)
    expected = LedoitWolf().fit(fit)
    assert stats.distances(new) == pytest.approx(np.sqrt(expected.mahalanobis(new)), rel=1e-9)
    assert stats.held_out == pytest.approx(np.sort(np.sqrt(expected.mahalanobis(held_out))))
    assert stats.threshold == pytest.approx(np.quantile(stats.held_out, QUANTILE))
    assert (stats.n_fit, stats.quantile) == (300, QUANTILE)


def test_films_like_the_training_ones_pass_and_shifted_ones_are_flagged():
    rng = np.random.default_rng(1)
    stats = fit_stats(correlated(rng, 2000), correlated(rng, 2000))
    same = stats.distances(correlated(rng, 4000)) > stats.threshold
    assert 0.003 < same.mean() < 0.02  # about 1 - QUANTILE
    shifted = stats.distances(correlated(rng, 500, shift=3.0)) > stats.threshold
    assert shifted.mean() > 0.95


def test_statistics_file_round_trip_and_its_errors(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    stats = fit_stats(correlated(rng, 50), correlated(rng, 20), quantile=0.9)
    stats.save(tmp_path / STATS_FILE)
    again = FeatureStats.load(tmp_path / STATS_FILE, features=4)
    for name in ("mean", "precision", "held_out"):
        assert np.array_equal(getattr(again, name), getattr(stats, name))
    assert (again.threshold, again.quantile, again.n_fit) == (stats.threshold, 0.9, 50)
    first = (tmp_path / STATS_FILE).read_bytes()
    later = time.time() + 3600  # an hour on: a file stamped with the time would differ
    monkeypatch.setattr(time, "time", lambda: later)
    again.save(tmp_path / STATS_FILE)
    assert (tmp_path / STATS_FILE).read_bytes() == first  # dvc.lock's hash stays
    with pytest.raises(ValueError, match=rf"{STATS_FILE}: statistics of 4 features, but the "
                       "model beside it gives 56"):  # fmt: skip
        FeatureStats.load(tmp_path / STATS_FILE, features=56)
    with pytest.raises(FileNotFoundError, match=r"gone\.npz: no out-of-distribution .* "
                       "--no-input-check"):  # fmt: skip
        FeatureStats.load(tmp_path / "gone.npz")
    with pytest.raises(ValueError, match="5 features, but the statistics have 4"):
        stats.distances(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="at least 2 images to fit and 1 held out"):
        fit_stats(correlated(rng, 1), correlated(rng, 3))


@pytest.mark.parametrize("setting", ["baseline", "stn"])
def test_features_are_the_channel_statistics_of_the_first_three_blocks(setting):
    torch.manual_seed(0)
    model = build_model(setting, CLASSIFIER, ST if setting == "stn" else None).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        plain = model(images)
        with capture_features(model) as captured:
            hooked = model(images)
            model(images[:1])
    assert torch.equal(plain, hooked)  # the hooks change nothing
    assert [c.shape for c in captured] == [(3, 56), (1, 56)]  # 2 x (4 + 8 + 16) channels
    assert feature_count(model) == 56
    assert captured[1][0] == pytest.approx(captured[0][0], abs=1e-5)  # an image's own

    classifier = model.classifier if isinstance(model, STN) else model
    if setting == "stn":  # what the classifier saw: the ST module's windows
        with torch.no_grad():
            model(images)
            seen = sample_window(model.st.sample_input(images), model.last_windows, 32)
    else:
        seen = images
    expected, x = [], normalise(seen)
    with torch.no_grad():
        for module in classifier.vgg.features:
            x = module(x)
            if isinstance(module, torch.nn.MaxPool2d) and len(expected) < 6:
                expected += [x.mean((2, 3)), x.std((2, 3), correction=0)]
    # block by block: the means of the block's channels, then their standard deviations
    assert captured[0] == pytest.approx(torch.cat(expected, 1), abs=1e-5)


def test_the_train_stage_writes_the_statistics_beside_the_model(tmp_path, monkeypatch):
    """Fitted on the run's training images, the threshold from its validation images."""
    from test_train import run_stage, synthetic_images

    monkeypatch.chdir(tmp_path)
    paths, labels, images = synthetic_images(40)
    write_store(tmp_path / "data" / "resized", paths, iter(images), 32)
    folds = pd.DataFrame(
        {"path": paths, "patient": range(40), "label": labels, "fold": [i % 5 for i in range(40)]}
    )
    folds.to_csv(tmp_path / "data" / "folds.csv", index=False)
    run_stage("baseline", tmp_path, monkeypatch)

    model_dir = tmp_path / "models" / "baseline" / "fold1"
    model = load_model(model_dir / "model.pt")
    stats = FeatureStats.load(model_dir / STATS_FILE, feature_count(model))
    split = split_of(folds["fold"], 1, 5)
    assert stats.n_fit == (split == "train").sum() == 24
    store = ImageStore(tmp_path / "data" / "resized")
    val = store_features(
        model, store, folds.loc[split == "val", "path"].tolist(), torch.device("cpu")
    )
    assert stats.held_out == pytest.approx(np.sort(stats.distances(val)), rel=1e-5)
    assert stats.threshold == pytest.approx(np.quantile(stats.held_out, QUANTILE))
