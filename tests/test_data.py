"""Data registry: digits split/normalisation, loader determinism, synthetic data, local-folder errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from granet_cli.data import DataError, DatasetInfo, build_loaders, dataset_info

from .conftest import write_fake_cifar10

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # the GraNet reference's CIFAR-10 statistics
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


@pytest.fixture(scope="module")
def sk_split():
    d = load_digits()
    return train_test_split(d.images / 16.0, d.target, test_size=0.25, stratify=d.target, random_state=0)


def first_batch(loader):
    return next(iter(loader))


# ----------------------------------------------------------------------------- digits
def test_digits_info_and_sizes(sk_split):
    x_tr, x_te, _, _ = sk_split
    assert len(x_tr) + len(x_te) == 1797
    info = dataset_info(**dict(name="digits"))
    assert info == DatasetInfo("digits", 10, (1, 8, 8), len(x_tr), len(x_te))
    assert (info.train_size, info.test_size) == (1347, 450)
    loaders = build_loaders(**dict(name="digits", batch_size=100, test_batch_size=200), seed=0)
    assert loaders.info == info
    assert len(loaders.train.dataset) == 1347 and len(loaders.test.dataset) == 450
    assert len(loaders.train) == math.ceil(1347 / 100)  # drop_last=False
    assert len(loaders.test) == math.ceil(450 / 200)
    x, y = first_batch(loaders.train)
    assert x.shape == (100, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (100,) and y.dtype == torch.long


def test_digits_values_are_train_normalised(sk_split):
    x_tr, x_te, y_tr, y_te = sk_split
    mean, std = x_tr.mean(), x_tr.std()
    loaders = build_loaders(**dict(name="digits"), seed=0)
    xt, yt = loaders.train.dataset.tensors
    np.testing.assert_allclose(xt.squeeze(1).numpy(), (x_tr - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(yt.numpy(), y_tr)
    assert abs(xt.mean().item()) < 1e-4 and xt.std().item() == pytest.approx(1.0, abs=1e-3)
    # the test loader is not shuffled: its batches are the split's test set, in order
    xs, ys = zip(*loaders.test)
    np.testing.assert_allclose(torch.cat(xs).squeeze(1).numpy(), (x_te - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), y_te)


def test_digits_split_is_stratified():
    d = load_digits()
    full = np.bincount(d.target, minlength=10) / len(d.target)
    loaders = build_loaders(**dict(name="digits"), seed=3)
    for ds in (loaders.train.dataset, loaders.test.dataset):
        y = ds.tensors[1].numpy()
        counts = np.bincount(y, minlength=10)
        # stratified: each class within one sample of its exact share
        assert np.all(np.abs(counts - full * len(y)) <= 1.0)


def test_digits_split_independent_of_seed():
    a = build_loaders(**dict(name="digits"), seed=0)
    b = build_loaders(**dict(name="digits"), seed=12345)
    for da, db in ((a.train.dataset, b.train.dataset), (a.test.dataset, b.test.dataset)):
        assert torch.equal(da.tensors[0], db.tensors[0]) and torch.equal(da.tensors[1], db.tensors[1])


def test_shuffle_is_seeded():
    spec = dict(name="digits", batch_size=64)
    xa, ya = first_batch(build_loaders(**spec, seed=7).train)
    xb, yb = first_batch(build_loaders(**spec, seed=7).train)
    xc, yc = first_batch(build_loaders(**spec, seed=8).train)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)
    # the order is a real shuffle, not the stored order
    assert not torch.equal(xa, build_loaders(**spec, seed=7).train.dataset.tensors[0][:64])
    # a second epoch of the same loader is a different order, and still covers every sample once
    loader = build_loaders(**spec, seed=7).train
    ep1 = torch.cat([x for x, _ in loader])
    ep2 = torch.cat([x for x, _ in loader])
    assert not torch.equal(ep1, ep2)
    assert ep1.shape[0] == ep2.shape[0] == 1347
    assert torch.allclose(ep1.sum(0), ep2.sum(0), atol=1e-2)


def test_distributed_sampler_shards_train_set():
    spec = dict(name="digits", batch_size=1000)
    full = build_loaders(**spec, seed=0).train.dataset.tensors[0]
    shards = []
    for rank in range(2):
        loaders = build_loaders(**spec, seed=0, rank=rank, world_size=2)
        assert loaders.test.sampler.__class__.__name__ == "SequentialSampler"
        assert len(loaders.test.dataset) == 450
        shards.append(torch.cat([x for x, _ in loaders.train]))
    assert shards[0].shape[0] == shards[1].shape[0] == math.ceil(1347 / 2)
    # together the shards cover the whole train set (DistributedSampler pads by one repeat)
    both = torch.cat(shards).flatten(1)
    rows = {tuple(r) for r in torch.round(both * 1e4).int().tolist()}
    assert rows == {tuple(r) for r in torch.round(full.flatten(1) * 1e4).int().tolist()}
    # the sharding is seeded: same seed, same shard
    again = torch.cat([x for x, _ in build_loaders(**spec, seed=0, rank=1, world_size=2).train])
    assert torch.equal(again, shards[1])


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_and_labels():
    spec = dict(name="synthetic", input_shape=[2, 6, 5], num_classes=4, train_size=90, test_size=30, batch_size=32)
    info = dataset_info(**spec)
    assert info == DatasetInfo("synthetic", 4, (2, 6, 5), 90, 30)
    loaders = build_loaders(**spec, seed=0)
    assert len(loaders.train.dataset) == 90 and len(loaders.test.dataset) == 30
    x, y = first_batch(loaders.train)
    assert x.shape == (32, 2, 6, 5) and x.dtype == torch.float32
    ys = torch.cat([y for _, y in loaders.train] + [y for _, y in loaders.test])
    assert ys.dtype == torch.long and ys.min() >= 0 and ys.max() < 4
    assert len(ys.unique()) == 4


def test_synthetic_is_identical_across_runs_and_seeds():
    spec = dict(name="synthetic", train_size=64, test_size=32)
    a = build_loaders(**spec, seed=0)
    b = build_loaders(**spec, seed=99)
    for da, db in ((a.train.dataset, b.train.dataset), (a.test.dataset, b.test.dataset)):
        assert torch.equal(da.tensors[0], db.tensors[0]) and torch.equal(da.tensors[1], db.tensors[1])


@pytest.mark.parametrize("shape", [[3, 32, 32], [1, 8, 8]])
def test_synthetic_labels_are_learnable(shape):
    from sklearn.linear_model import LogisticRegression

    spec = dict(name="synthetic", input_shape=shape, train_size=512, test_size=256)
    loaders = build_loaders(**spec, seed=0)
    xtr, ytr = loaders.train.dataset.tensors
    xte, yte = loaders.test.dataset.tensors
    clf = LogisticRegression(max_iter=300).fit(xtr.flatten(1).numpy(), ytr.numpy())
    acc = clf.score(xte.flatten(1).numpy(), yte.numpy())
    assert acc > 0.3  # chance is 0.1 (classes are roughly balanced)
    assert np.bincount(ytr.numpy(), minlength=10).max() < 0.25 * len(ytr)


# ----------------------------------------------------------------------------- local folders
def test_cifar_info_needs_no_files(tmp_path):
    missing = tmp_path / "nowhere"
    assert dataset_info(**dict(name="cifar10", root=str(missing))) == DatasetInfo(
        "cifar10", 10, (3, 32, 32), 50000, 10000
    )
    assert dataset_info(**dict(name="cifar100", root=str(missing))).num_classes == 100
    info = dataset_info(**dict(name="imagenet", root=str(missing)))
    assert info == DatasetInfo("imagenet", 1000, (3, 224, 224), 1281167, 50000)


def test_missing_cifar10_root(tmp_path):
    root = tmp_path / "no_cifar"
    with pytest.raises(DataError) as exc:
        build_loaders(**dict(name="cifar10", root=str(root)), seed=0)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(root / "cifar-10-batches-py") in msg and "cifar-10-batches-py" in msg
    assert not root.exists()  # nothing was downloaded or created


def test_missing_cifar100_root(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python"):
        build_loaders(**dict(name="cifar100", root=str(tmp_path)), seed=0)


def test_incomplete_cifar10_folder(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="data_batch_1") as exc:
        build_loaders(**dict(name="cifar10", root=str(tmp_path)), seed=0)
    assert str(tmp_path) in str(exc.value)


def test_missing_imagenet_root(tmp_path):
    root = tmp_path / "imagenet"
    with pytest.raises(DataError) as exc:
        build_loaders(**dict(name="imagenet", root=str(root)), seed=0)
    msg = str(exc.value)
    assert "\n" not in msg and str(root) in msg and "<root>/train/<wnid>/*.JPEG" in msg


def test_fake_cifar10_loads_normalised(tmp_path):
    arrays = write_fake_cifar10(tmp_path)
    spec = dict(name="cifar10", root=str(tmp_path), batch_size=8, test_batch_size=3)
    loaders = build_loaders(**spec, seed=0)
    assert len(loaders.train.dataset) == 20 and len(loaders.test.dataset) == 4
    x, y = first_batch(loaders.train)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    # test images: exactly (pixel / 255 - mean) / std in CHW layout
    xt, yt = first_batch(loaders.test)
    data, labels = arrays["test_batch"]
    raw = torch.from_numpy(data[:3].reshape(3, 3, 32, 32).astype(np.float32) / 255.0)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(xt, (raw - mean) / std, atol=1e-5, rtol=1e-5)
    assert yt.tolist() == labels[:3]
    # train augmentation keeps the value range of normalised pixels (padding = 0 pixels)
    lo = ((0 - mean) / std).min().item()
    hi = ((1 - mean) / std).max().item()
    assert lo - 1e-5 <= x.min().item() and x.max().item() <= hi + 1e-5


def test_fake_cifar10_without_augmentation_is_exact(tmp_path):
    arrays = write_fake_cifar10(tmp_path)
    spec = dict(name="cifar10", root=str(tmp_path), batch_size=20, augment=False)
    x, y = first_batch(build_loaders(**spec, seed=0).train)
    train = np.concatenate([arrays[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((arrays[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    # shuffled, so match each sample back to its source image
    for img, label in zip(x, y.tolist()):
        raw = (img * std + mean) * 255.0
        idx = int(np.argmin(np.abs(train.reshape(-1, 3, 32, 32) - raw.numpy()).sum(axis=(1, 2, 3))))
        assert np.abs(train[idx].reshape(3, 32, 32) - raw.numpy()).max() < 1e-2
        assert labels[idx] == label


def test_fake_imagenet_folder_loads(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            d = tmp_path / split / wnid
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
    loaders = build_loaders(**dict(name="imagenet", root=str(tmp_path), batch_size=4), seed=0)
    x, y = first_batch(loaders.train)
    assert x.shape == (4, 3, 224, 224)
    xv, yv = first_batch(loaders.test)
    assert xv.shape == (4, 3, 224, 224) and yv.tolist() == [0, 0, 1, 1]
    assert loaders.info.num_classes == 2 and loaders.info.train_size == 4


def test_shipped_digits_split_is_scikit_learns():
    """digits never imports scikit-learn at run time: its shipped split must be exactly sklearn's."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from granet_cli.data import digits

    d = load_digits()
    want = train_test_split(
        (d.images / 16.0).astype(np.float32), d.target, test_size=0.25, stratify=d.target, random_state=0
    )
    got = digits._split()
    for a, b in zip(want, got):
        assert np.array_equal(a, b)


def test_spec_data_section_feeds_the_builders_and_keeps_their_bounds():
    # DataSpec is generated from DataConfig: a spec's data: section goes to the builders as it is,
    # the spec enforces DataConfig's bounds by field path, and an unknown keyword is refused by name
    from granet_cli.spec import SpecError, load_run_spec

    spec = load_run_spec(None, ["data.batch_size=100"])
    loaders = build_loaders(**spec.data.model_dump(), seed=0)
    assert loaders.train.batch_size == 100
    for override, needle in (
        ("data.batch_size=0", "data.batch_size: Input should be greater than 0"),
        ("data.val_fraction=1", "data.val_fraction: Input should be less than 1"),
        ("data.input_shape=[1,2,3,4]", "data.input_shape:"),
        ("data.input_shape=[3,0,4]", "data.input_shape: sizes must be positive integers, got [3, 0, 4]"),
    ):
        with pytest.raises(SpecError) as e:
            load_run_spec(None, [override])
        assert any(line.startswith(needle) for line in e.value.problems), (override, e.value.problems)
    with pytest.raises(TypeError, match="unknown data setting"):
        build_loaders("digits", seed=0, batchsize=3)
