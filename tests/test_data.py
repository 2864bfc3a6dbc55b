import shutil

import numpy as np
import pytest
import torch

from hesslib import data
from hesslib.data import DataError, Split, balanced_subset, load, random_crop_flip


def test_mnist_is_the_standard_split(mnist):
    assert mnist.train.x.shape == (60_000, 1, 28, 28)
    assert mnist.test.x.shape == (10_000, 1, 28, 28)
    assert mnist.train.x.dtype == torch.float32
    assert 0.0 <= mnist.train.x.min() and mnist.train.x.max() <= 1.0
    assert mnist.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Published pixel statistics of the training split.
    assert mnist.train.x.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert mnist.train.x.std().item() == pytest.approx(0.3081, abs=1e-4)


def test_cifar10_layout(data_dir):
    cifar = load("cifar10", root=data_dir)
    assert cifar.train.x.shape == (50_000, 3, 32, 32)
    assert cifar.train.y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar.classes[0] == "airplane"
    means = cifar.train.x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.tensor([0.4914, 0.4822, 0.4465]),
                               atol=1e-4, rtol=0)


def test_environment_variable_names_the_folder(data_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(data_dir))
    assert load("mnist").train.x.shape[0] == 60_000


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"looked for .*mnist\.npz.*HESSLIB_DATA"):
        load("mnist", root=tmp_path)


def test_unknown_name_lists_known_ones():
    with pytest.raises(DataError, match="unknown data set 'svhn'.*cifar10"):
        load("svhn")


def test_corrupt_archive_is_reported(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        load("mnist", root=tmp_path)


def test_truncated_archive_is_reported(tmp_path, data_dir):
    blob = (data_dir / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="mnist.npz"):
        load("mnist", root=tmp_path)


def _write_fake(path, **overrides):
    arrays = {
        "x_train": np.zeros((60_000, 28, 28), np.uint8),
        "y_train": np.zeros(60_000, np.int64),
        "x_test": np.zeros((10_000, 28, 28), np.uint8),
        "y_test": np.zeros(10_000, np.int64),
        "classes": np.array([str(i) for i in range(10)]),
    }
    arrays.update(overrides)
    np.savez(path, **arrays)


def test_wrong_shape_is_reported(tmp_path):
    _write_fake(tmp_path / "mnist.npz", x_test=np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"x_test is uint8 \(10, 28, 28\)"):
        load("mnist", root=tmp_path)


def test_wrong_dtype_is_reported(tmp_path):
    _write_fake(tmp_path / "mnist.npz",
                x_train=np.zeros((60_000, 28, 28), np.float32))
    with pytest.raises(DataError, match="x_train is float32"):
        load("mnist", root=tmp_path)


def test_label_out_of_range_is_reported(tmp_path):
    labels = np.zeros(10_000, np.int64)
    labels[3] = 10
    _write_fake(tmp_path / "mnist.npz", y_test=labels)
    with pytest.raises(DataError, match=r"labels in \[0, 10\]"):
        load("mnist", root=tmp_path)


def test_data_folder_is_not_written(tmp_path, data_dir):
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(data_dir / "mnist.npz", folder / "mnist.npz")
    folder.chmod(0o555)
    try:
        before = sorted(p.name for p in folder.iterdir())
        load("mnist", root=folder)
        assert sorted(p.name for p in folder.iterdir()) == before
    finally:
        folder.chmod(0o755)


def test_balanced_subset_is_balanced_and_deterministic(mnist):
    a = balanced_subset(mnist.train, 1_005, seed=3)
    b = balanced_subset(mnist.train, 1_005, seed=3)
    c = balanced_subset(mnist.train, 1_005, seed=4)
    counts = a.y.bincount(minlength=10)
    assert counts.tolist() == [101] * 5 + [100] * 5
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)
    assert torch.equal(a.x, mnist.train.x[a.indices])
    assert torch.equal(a.indices, a.indices.sort().values)


def test_balanced_subset_rejects_bad_sizes(mnist):
    with pytest.raises(ValueError, match="subset size 0 is out of range"):
        balanced_subset(mnist.train, 0)
    assert balanced_subset(mnist.train, None) is mnist.train


def test_balanced_subset_reports_a_short_class():
    split = Split(torch.zeros(5, 1, 2, 2), torch.tensor([0, 0, 0, 0, 1]),
                  torch.arange(5))
    with pytest.raises(ValueError, match="class 1 has 1 samples"):
        balanced_subset(split, 4)


def test_random_crop_flip_moves_pixels_but_keeps_content():
    x = torch.rand(8, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, generator=generator)
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    # Each output image is a shifted (and maybe flipped) window of its input:
    # every nonzero pixel value comes from the same image.
    for i in range(8):
        values = set(out[i][out[i] != 0].tolist())
        assert values <= set(x[i].flatten().tolist())
    again = random_crop_flip(x, padding=2,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
