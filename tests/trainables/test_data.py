"""trainables.tasks.image.data: embedded digits, split roles, determinism, clear errors, CIFAR / ImageFolder layouts."""

from __future__ import annotations

import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from trainables.datasets import DatasetNotFoundError
from trainables.tasks.image.data import DATASETS, ImageData, ImageSplit, load_image_data


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_image_data("digits", seed=0)


def _keys(split: ImageSplit) -> list[bytes]:
    """One content key (pixels + label) per item; digits has a few duplicate images, so compare multisets."""
    return [
        img.numpy().tobytes() + int(lab).to_bytes(2, "little", signed=True)
        for img, lab in zip(split.images, split.labels, strict=True)
    ]


# ------------------------------------------------------------------------------------------------ digits


def test_digits_shapes_dtypes_and_classes(digits: ImageData) -> None:
    for split in (digits.pretrain, digits.train, digits.val, digits.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 8, 8) and split.images.shape[0] == split.labels.shape[0]
    assert digits.num_classes == 10 and len(DATASETS) == 5
    assert set(digits.train.labels.tolist()) == set(range(10))
    assert int(digits.train.images.max()) == 255 and int(digits.train.images.min()) == 0  # 0..16 scaled to 0..255
    assert digits.pretrain is digits.train
    assert len(digits.mean) == len(digits.std) == 1 and 0 < digits.mean[0] < 1 and digits.std[0] > 0
    assert (digits.channels, digits.image_size) == (1, 8)


def test_digits_split_sizes_70_15_15(digits: ImageData) -> None:
    sizes = len(digits.train), len(digits.val), len(digits.test)
    assert sum(sizes) == 1797
    assert sizes == (1257, 270, 270)
    # stratified: every class is in every split in roughly its share (each class has ~180 images)
    for split in (digits.val, digits.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert int(counts.min()) >= 25 and int(counts.max()) <= 30


def test_digits_mean_std_are_train_statistics(digits: ImageData) -> None:
    x = digits.train.images.double() / 255
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert digits.std[0] == pytest.approx(float(x.std()), abs=1e-9)


def test_digits_splits_partition_the_scaled_set(digits: ImageData) -> None:
    """train + val + test is the whole scaled set, each item once: the sizes add up and nothing overlaps."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    expected = Counter(
        np.rint(img * 255 / 16).astype(np.uint8).tobytes() + int(t).to_bytes(2, "little", signed=True)
        for img, t in zip(bunch.images, bunch.target, strict=True)
    )
    got = Counter(_keys(digits.train) + _keys(digits.val) + _keys(digits.test))
    assert got == expected


def test_digits_deterministic_by_seed(digits: ImageData) -> None:
    same = load_image_data("digits", seed=0)
    other = load_image_data("digits", seed=1)
    for a, b in ((digits.train, same.train), (digits.val, same.val), (digits.test, same.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert set(_keys(digits.val)) != set(_keys(other.val))
    assert set(_keys(digits.test)) != set(_keys(other.test))


def test_digits_limit_keeps_class_balance() -> None:
    data = load_image_data("digits", limit=50)
    assert (len(data.train), len(data.val), len(data.test)) == (50, 50, 50)
    assert torch.bincount(data.train.labels, minlength=10).tolist() == [5] * 10
    assert len(load_image_data("digits", limit=5000).train) == 1257  # a limit above the size is a no-op


def test_digits_image_size_resizes_every_split() -> None:
    data = load_image_data("digits", image_size=16, limit=20)
    assert data.train.images.shape[1:] == (1, 16, 16) and data.test.images.shape[1:] == (1, 16, 16)
    assert data.train.images.dtype == torch.uint8


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(ValueError, match="cifar10, cifar100, stl10, imagefolder"):
        load_image_data("mnist")


# ------------------------------------------------------------------------------------------ missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "imagefolder"])
def test_missing_root_names_the_root(name: str, tmp_path) -> None:
    root = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="not found under " + root) as info:
        load_image_data(name, root)
    message = str(info.value)
    assert "\n" not in message and "`dataset: digits`" in message


@pytest.mark.parametrize(
    ("name", "folder"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("stl10", "stl10_binary")],
)
def test_empty_root_names_the_expected_folder(name: str, folder: str, tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_image_data(name, str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and f"{folder}/" in message and "nothing is downloaded" in message
    assert isinstance(info.value, ValueError) and "\n" not in message


def test_no_root_for_a_file_dataset() -> None:
    with pytest.raises(DatasetNotFoundError, match="cifar10 needs a data root"):
        load_image_data("cifar10", None)


# --------------------------------------------------------------------------------------- CIFAR-10 layout


def _write_fake_cifar10(root, per_batch: int = 20) -> None:
    """The official cifar-10-batches-py pickles: dicts with 'data' (n, 3072) uint8 (CHW rows) and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(n: int, start: int) -> dict:
        labels = [(start + i) % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, 0] = labels  # red channel, top-left pixel = label: lets the test check the layout
        return {
            "batch_label": "fake",
            "labels": labels,
            "data": data,
            "filenames": [f"{i}.png" for i in range(n)],
        }

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch, i), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(per_batch, 0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)


def test_cifar10_loads_from_the_official_layout(tmp_path, monkeypatch) -> None:
    # torchvision md5-checks every file against the real archive, which a fake cannot match: the check (the
    # module-level `check_integrity` used by both `_check_integrity` and `_load_meta`) is patched to pass.
    import torchvision.datasets.cifar as tv_cifar

    _write_fake_cifar10(tmp_path)
    with pytest.raises(
        DatasetNotFoundError, match="md5"
    ):  # unpatched: the files are there but fail the check
        load_image_data("cifar10", str(tmp_path))
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    data = load_image_data("cifar10", str(tmp_path), seed=0, val_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.num_classes == 10 and data.pretrain is data.train
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2023, 0.1994, 0.2010)
    for split in (data.train, data.val, data.test):  # (N, 32, 32, 3) -> (N, 3, 32, 32) kept the pixel order
        assert torch.equal(split.images[:, 0, 0, 0].long(), split.labels)
    assert torch.bincount(data.val.labels, minlength=10).tolist() == [2] * 10  # stratified hold-out
    again = load_image_data("cifar10", str(tmp_path), seed=0, val_fraction=0.2)
    assert torch.equal(again.val.images, data.val.images)


# ------------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_loads_generated_pngs(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        os.makedirs(tmp_path / name)
        for i in range(10):
            size = (20 + 3 * i, 16 + 2 * i)  # non-square, varied sizes
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            pixels[..., 0] = 200 * c  # class-coloured red channel
            mode = "L" if i == 0 else "RGB"  # a greyscale file is converted to RGB
            img = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
            img.save(tmp_path / name / f"{i}.png")
    data = load_image_data("imagefolder", str(tmp_path), image_size=12)
    assert data.num_classes == 2
    assert len(data.train) + len(data.val) + len(data.test) == 20
    for split in (data.train, data.val, data.test):
        assert split.images.shape[1:] == (3, 12, 12) and split.images.dtype == torch.uint8
        red = split.images[:, 0].float().mean(dim=(1, 2))
        assert torch.all((red > 100) == (split.labels == 1))
    assert len(data.mean) == 3 and all(s > 0 for s in data.std)
    assert load_image_data("imagefolder", str(tmp_path)).train.images.shape[-1] == 64  # default size


def test_imagefolder_without_class_folders(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="one sub-folder of images per class"):
        load_image_data("imagefolder", str(tmp_path))


# ------------------------------------------------------------------------------------------------ STL-10


def test_stl10_pretrain_is_train_plus_unlabelled_without_val(tmp_path, monkeypatch) -> None:
    """The official binary layout; md5 check patched as for CIFAR. Val images never enter pretraining."""
    import torchvision.datasets.stl10 as tv_stl10

    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    counts = {"train": 40, "unlabeled": 30, "test": 20}
    for split, n in counts.items():
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        labels = np.arange(n) % 10
        images[:, 0, 0, 0] = labels if split != "unlabeled" else 255  # tag pixel survives the transposes
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major, as the real files
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")  # 1-based on disk
    monkeypatch.setattr(tv_stl10, "check_integrity", lambda *args, **kwargs: True)
    data = load_image_data("stl10", str(tmp_path), val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    assert len(data.pretrain) == 30 + 30 and data.train.images.shape[1:] == (3, 96, 96)
    assert int((data.pretrain.labels == -1).sum()) == 30
    for split in (data.train, data.val, data.test):
        assert torch.equal(split.images[:, 0, 0, 0].long(), split.labels)
    pretrain_keys, val_keys = set(_keys(data.pretrain)), set(_keys(data.val))
    assert set(_keys(data.train)) <= pretrain_keys and not val_keys & pretrain_keys
    small = load_image_data("stl10", str(tmp_path), val_fraction=0.25, image_size=32)
    assert small.pretrain.images.shape[1:] == small.test.images.shape[1:] == (3, 32, 32)


def test_data_that_is_not_where_or_what_the_user_said_is_a_user_error(tmp_path):
    from trainables.errors import UserError

    assert issubclass(DatasetNotFoundError, UserError)
    from PIL import Image

    few, many = tmp_path / "few", tmp_path / "many"
    for root, n in ((few, 1), (many, 6)):
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / c / f"{i}.png")
    with pytest.raises(UserError, match="has too few images to split"):
        load_image_data("imagefolder", str(few))
    (many / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot decode .*0\.png"):
        load_image_data("imagefolder", str(many))


def test_unreadable_dataset_files_are_user_errors(tmp_path):
    from trainables.datasets import read_wav as _read_wav
    from trainables.errors import UserError
    from trainables.tasks.audio_text.clotho import read_word_vectors
    from trainables.tasks.audio_visual.vggsound import _read_labels

    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(UserError, match=r"cannot decode .*bad\.wav"):
        _read_wav(str(tmp_path / "bad.wav"), 16000)
    (tmp_path / "wv.txt").write_text("cat 1 2\ndog a b\n")
    with pytest.raises(UserError, match="line 2: the values after the word are not all numbers"):
        read_word_vectors(str(tmp_path / "wv.txt"), {"cat", "dog"})
    (tmp_path / "labels.csv").write_text("clip,label,split\nx,dog,training\n")
    with pytest.raises(UserError, match="line 2: split 'training' is not one of"):
        _read_labels(str(tmp_path), "labels.csv")


def test_label_and_caption_files_that_are_not_text_are_user_errors(tmp_path):
    from trainables.errors import UserError
    from trainables.tasks.audio_text.clotho import _read_clotho_csv
    from trainables.tasks.audio_visual.vggsound import _read_labels

    (tmp_path / "labels.csv").write_bytes(b"clip,label,split\n\xff\xfe\x00bad\n")
    with pytest.raises(UserError, match="is not a readable UTF-8 CSV"):
        _read_labels(str(tmp_path), "labels.csv")
    captions = tmp_path / "captions.csv"
    captions.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(UserError, match="is not a readable UTF-8 CSV"):
        _read_clotho_csv(str(captions))
    captions.write_text("caption_1,file_name\na dog barks\n")  # a short row: file_name left None
    with pytest.raises(UserError, match="line 2: empty file_name"):
        _read_clotho_csv(str(captions))
