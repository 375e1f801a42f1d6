import numpy as np
import pytest
import torch

from cxrstn.data import ImageDataset, augmentation, balanced_sampler
from cxrstn.images import ImageStore, write_store


@pytest.fixture
def store(tmp_path) -> ImageStore:
    """Four 16 px images: a left-to-right ramp plus 10 x the image number."""
    paths = [f"p{i}/view1_frontal.jpg" for i in range(4)]
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 8, (16, 1))
    images = [ramp + 10 * i for i in range(4)]
    write_store(tmp_path / "store", paths, iter(images), 16)
    return ImageStore(tmp_path / "store")


def test_items_are_float_images_in_unit_range_with_label_and_index(store):
    dataset = ImageDataset(store, store.paths, [0, 1, 0, 1])
    image, label, index = dataset[2]
    assert image.shape == (1, 16, 16) and image.dtype == torch.float32
    assert image[0, 0, 0].item() == pytest.approx(20 / 255)
    assert image[0, 5, 15].item() == pytest.approx((15 * 8 + 20) / 255)
    assert label.item() == 0.0 and index == 2


def test_augmentation_changes_training_images_only(store):
    torch.manual_seed(0)
    plain = ImageDataset(store, store.paths, [0, 1, 0, 1])
    augmented = ImageDataset(store, store.paths, [0, 1, 0, 1], augmentation(5, 3))
    raw = torch.tensor(store[store.paths[1]]).float() / 255
    assert torch.equal(plain[1][0][0], raw)
    changed = augmented[1][0][0]
    assert not torch.equal(changed, raw)
    # Soft: a rotation of at most 5 degrees moves a pixel near the centre by well under 1/8
    # of the ramp's range.
    assert (changed[6:10, 6:10] - raw[6:10, 6:10]).abs().max() < 0.125


def test_missing_image_and_bad_label_are_named(store):
    with pytest.raises(ValueError, match="not in the store, e.g. nope.jpg"):
        ImageDataset(store, ["nope.jpg"], [0])
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, got \[2\]"):
        ImageDataset(store, store.paths[:1], [2])


def test_sampler_balances_classes_and_is_seeded():
    labels = [0] * 90 + [1] * 10
    draws = []
    generator = torch.Generator().manual_seed(0)
    sampler = balanced_sampler(labels, generator)
    assert len(sampler) == 100
    for _ in range(200):
        draws.extend(sampler)
    share_abnormal = np.mean([labels[i] for i in draws])
    assert share_abnormal == pytest.approx(0.5, abs=0.02)  # 20,000 draws: std 0.0035
    again = list(balanced_sampler(labels, torch.Generator().manual_seed(0)))
    assert again == draws[:100]


def test_sampler_needs_both_classes():
    with pytest.raises(ValueError, match="needs both classes"):
        balanced_sampler([1, 1, 1], torch.Generator())


@pytest.mark.parametrize("setting", ["baseline", "stn"])
def test_every_setting_augments_the_same_copy_the_model_would_make(tmp_path, setting):
    """The loader's copy (classifier.sample_size) is the one the model makes of a stored
    image, for every setting: scoring a stored image or the loader's copy is the same."""
    from cxrstn.models import build_model
    from cxrstn.train import input_side

    rng = np.random.default_rng(0)
    paths = [f"p{i}.jpg" for i in range(4)]
    images = [rng.integers(0, 256, (96, 96)).astype(np.uint8) for _ in paths]
    write_store(tmp_path / "big", paths, iter(images), 96)
    store = ImageStore(tmp_path / "big")
    classifier = {"arch": "vgg16", "width": 0.0625, "input_size": 32, "dropout": 0.0}
    classifier |= {"sample_size": 48, "weights": None}
    stn = {"sx_init": 0.8, "sy_init": 0.7, "tx_init": 0.1, "ty_init": 0.0, "loc_size": 16}
    stn |= {"loc_channels": [2, 2, 2, 2], "loc_hidden": 4}
    model = build_model(setting, classifier, stn).eval()
    assert input_side(model) == 48
    whole = ImageDataset(store, store.paths, [0, 1, 0, 1])
    copied = ImageDataset(store, store.paths, [0, 1, 0, 1], side=input_side(model))
    assert copied[1][0].shape == (1, 48, 48)
    with torch.no_grad():
        full = model(torch.stack([whole[i][0] for i in range(4)]))
        small = model(torch.stack([copied[i][0] for i in range(4)]))
    torch.testing.assert_close(small, full, rtol=0, atol=1e-6)
    # Without classifier.sample_size every setting samples the full stored image.
    plain = build_model(setting, classifier | {"sample_size": None}, stn)
    assert input_side(plain) is None


def test_source_copies_are_kept_up_to_the_cap_and_augmentation_leaves_them_alone(
    tmp_path, monkeypatch
):
    """An image drawn again gets the source copy made at its first draw (the same values as
    making it afresh); at most SOURCE_CACHE_BYTES of them are kept."""
    import cxrstn.data

    rng = np.random.default_rng(1)
    paths = [f"p{i}.jpg" for i in range(4)]
    write_store(
        tmp_path / "s", paths, (rng.integers(0, 256, (32, 32)).astype(np.uint8) for _ in paths), 32
    )
    store = ImageStore(tmp_path / "s")
    monkeypatch.setattr(cxrstn.data, "SOURCE_CACHE_BYTES", 2 * 4 * 16 * 16)  # two 16 px copies
    torch.manual_seed(0)
    dataset = ImageDataset(store, paths, [0, 1, 0, 1], augmentation(5, 3), side=16)
    monkeypatch.setattr(cxrstn.data, "SOURCE_CACHE_BYTES", 0)
    fresh = ImageDataset(store, paths, [0, 1, 0, 1], side=16)  # keeps nothing: made afresh
    first = [dataset.source(i).clone() for i in range(4)]
    assert sorted(dataset._sources) == [0, 1]  # the cap: two copies
    for _ in range(3):
        for i in range(4):
            dataset[i]  # augmented draws
    for i in range(4):
        assert torch.equal(dataset.source(i), first[i])
        assert torch.equal(fresh.source(i), first[i])
    assert dataset.source(0) is dataset.source(0) and fresh.source(0) is not fresh.source(0)
