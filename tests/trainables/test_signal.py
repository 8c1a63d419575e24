"""The signal task's data, views and encoder: MNIST-1D as the paper's package makes it, split by the trial's seed;
a user's own .npz; views that keep the shape and depend only on the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.datasets import DatasetNotFoundError
from trainables.errors import UserError
from trainables.evaluation import linear_probe_accuracy
from trainables.tasks.signal.augment import SignalAugment
from trainables.tasks.signal.data import check_signal_dataset, load_signal_data, mnist1d_cache_file, mnist1d_signals
from trainables.tasks.signal.models import Conv1dEncoder


@pytest.fixture(scope="module")
def data():
    return load_signal_data("mnist1d", seed=0)


def test_mnist1d_is_the_papers_dataset_split_70_15_15_and_standardised(data):
    x, y = mnist1d_signals()
    assert x.shape == (5000, 1, 40) and np.bincount(y).tolist() == [500] * 10
    assert (len(data.train), len(data.val), len(data.test)) == (3500, 750, 750)
    assert data.num_classes == 10 and (data.channels, data.length) == (1, 40)
    for split in (data.train, data.val, data.test):
        assert split.signals.dtype == torch.float32 and torch.bincount(split.labels).min() >= 70
    assert abs(float(data.train.signals.mean())) < 1e-5 and abs(float(data.train.signals.std()) - 1) < 1e-3


def test_generation_leaves_numpys_global_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached file: really generate
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    mnist1d_signals.cache_clear()
    mnist1d_signals()
    assert np.random.rand() == expected


def test_the_generated_signals_are_kept_in_the_cache_folder_and_a_damaged_file_is_made_again(tmp_path, monkeypatch):
    x, y = mnist1d_signals()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = Path(mnist1d_cache_file())
    assert cache.parent.parent == tmp_path and not cache.exists()
    for _ in range(2):  # generated and written, then read back
        mnist1d_signals.cache_clear()
        again, labels = mnist1d_signals()
        assert cache.exists() and np.array_equal(again, x) and np.array_equal(labels, y)
        assert not again.flags.writeable
    cache.write_bytes(b"not an npz")
    mnist1d_signals.cache_clear()
    assert np.array_equal(mnist1d_signals()[0], x) and np.load(cache)["x"].shape == x.shape
    mnist1d_signals.cache_clear()


def test_splits_follow_the_seed_and_the_limit_keeps_classes(data):
    again, other = load_signal_data("mnist1d", seed=0), load_signal_data("mnist1d", seed=1)
    assert torch.equal(again.val.signals, data.val.signals)
    assert not torch.equal(other.val.signals, data.val.signals)
    small = load_signal_data("mnist1d", seed=0, limit=50)
    assert len(small.train) == 50 and torch.bincount(small.train.labels).tolist() == [5] * 10


def test_raw_signals_are_hard_for_a_linear_probe(data):
    """The reason MNIST-1D is the default: a linear model on the raw signals is far from what an encoder reaches."""
    flat = lambda s: s.signals.flatten(1)  # noqa: E731
    acc = linear_probe_accuracy(flat(data.train), data.train.labels, flat(data.val), data.val.labels)
    assert 0.25 < acc < 0.45


def test_a_users_npz_loads_with_or_without_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 30)), np.repeat(np.arange(4), 50)
    np.savez(tmp_path / "signals.npz", x=x, y=y)
    d = load_signal_data("npz", str(tmp_path), seed=0)
    assert (len(d.train), len(d.val), len(d.test)) == (139, 31, 30) and d.length == 30 and d.num_classes == 4
    np.savez(tmp_path / "with_test.npz", x=x, y=y, x_test=x[:20, None, :], y_test=y[:20])
    d = load_signal_data("npz", str(tmp_path / "with_test.npz"), seed=0)
    assert len(d.test) == 20 and len(d.train) + len(d.val) == 200


def test_missing_or_malformed_signals_are_one_line_user_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="npz needs --data-root"):
        check_signal_dataset("npz", None)
    with pytest.raises(DatasetNotFoundError, match="signals.npz"):
        check_signal_dataset("npz", str(tmp_path))
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 5)), y=np.zeros(9, dtype=int))
    with pytest.raises(UserError, match=r"y must be non-negative integer labels of shape \(10,\)"):
        load_signal_data("npz", str(tmp_path / "bad.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read .* as an .npz file"):
        load_signal_data("npz", str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "nan.npz", x=np.full((10, 5), np.nan), y=np.zeros(10, dtype=int))
    with pytest.raises(UserError, match="must be finite numbers"):
        load_signal_data("npz", str(tmp_path / "nan.npz"))


def test_views_keep_the_shape_differ_and_depend_only_on_the_seed(data):
    x = data.train.signals[:16]
    aug = SignalAugment()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, x)
    gentle = SignalAugment(crop=(1.0, 1.0), max_shift=0, scale=0.0, shear=0.0, noise=0.0)
    assert torch.allclose(gentle(x, torch.Generator().manual_seed(0)), x, atol=1e-5)  # every step can be off


def test_the_encoder_maps_any_length_to_4_x_width_features():
    enc = Conv1dEncoder(2, width=8)
    assert enc(torch.zeros(3, 2, 40)).shape == (3, 32) and enc(torch.zeros(3, 2, 17)).shape == (3, 32)
