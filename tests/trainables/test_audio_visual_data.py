"""trainables.tasks.audio_visual.data: the embedded synthetic clips (sizes, determinism, balance, class and instance
information in both modalities, the out-of-domain scenes, statistics) and a tiny VGGSound-style root (layout,
resampling, frame choice, split roles, clear errors)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

from trainables.datasets import DatasetNotFoundError
from trainables.tasks.audio_visual.data import (
    DEFAULT_CLIPS,
    DEFAULT_OOD_CLIPS,
    AudioVisualData,
    check_audio_visual_dataset,
    load_audio_visual,
    log_mel_transform,
    log_mels,
)
from trainables.tasks.audio_visual.synthetic import SCENES

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = (20, 10, 10)
SMALL_OOD = (10, 5, 5)


@pytest.fixture(scope="module")
def default() -> AudioVisualData:
    return load_audio_visual("synthetic", seed=0)


@pytest.fixture(scope="module")
def small() -> AudioVisualData:
    return load_audio_visual("synthetic", seed=0, clips=SMALL, ood_clips=SMALL_OOD)


def _splits(data: AudioVisualData):
    return (data.train, data.val, data.test)


def _ood_splits(data: AudioVisualData):
    assert data.ood is not None
    return (data.ood.train, data.ood.val, data.ood.test)


def _nearest_class_mean(x_train, y_train, x_test, y_test, n_classes: int) -> float:
    """Accuracy of the nearest class mean (Euclidean): a probe with no capacity to learn anything but the means."""
    means = torch.stack([x_train[y_train == c].mean(0) for c in range(n_classes)])
    return float((torch.cdist(x_test, means).argmin(1) == y_test).float().mean())


def _pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-9)


# ------------------------------------------------------------------------------------------------- synthetic


def test_default_sizes_shapes_and_dtypes(default: AudioVisualData) -> None:
    for split, n in zip(_splits(default), DEFAULT_CLIPS, strict=True):
        assert split.frames.shape == (n, 4, 3, 32, 32) and split.frames.dtype == torch.uint8
        assert split.mels.shape == (n, 100, 64) and split.mels.dtype == torch.float32  # 1 s at a 10 ms hop
        assert split.labels.shape == (n,) and split.labels.dtype == torch.int64 and len(split.clip_ids) == n
        assert torch.isfinite(split.mels).all()
    assert default.name == "synthetic" and default.sample_rate == 8000 and default.n_mels == 64
    assert default.num_classes == 10 and len(default.class_names) == 10 and default.pretrain is default.train
    assert (default.frames_per_clip, default.frame_size, default.n_time) == (4, 32, 100)
    assert default.mel_mean.shape == (64,) and default.mel_std.shape == (64,)
    assert len(default.frame_mean) == 3 and len(default.frame_std) == 3


def test_deterministic_in_the_seed_and_different_across_seeds(small: AudioVisualData) -> None:
    same = load_audio_visual("synthetic", seed=0, clips=SMALL, ood_clips=SMALL_OOD)
    other = load_audio_visual("synthetic", seed=1, clips=SMALL, ood_clips=SMALL_OOD)
    for a, b in zip(_splits(small) + _ood_splits(small), _splits(same) + _ood_splits(same), strict=True):
        assert torch.equal(a.mels, b.mels) and torch.equal(a.labels, b.labels)
    for a, b in zip(_splits(small), _splits(same), strict=True):
        assert torch.equal(a.frames, b.frames)
    assert not torch.equal(small.train.frames, other.train.frames)
    assert not torch.equal(small.train.mels, other.train.mels)
    assert not torch.equal(small.ood.train.mels, other.ood.train.mels)


def test_limit_keeps_a_prefix_of_each_split(default: AudioVisualData) -> None:
    limited = load_audio_visual("synthetic", seed=0, limit=3)
    for full, part in zip(_splits(default), _splits(limited), strict=True):
        assert len(part) == 3 and part.clip_ids == full.clip_ids[:3]
        assert torch.equal(part.frames, full.frames[:3]) and torch.equal(part.labels, full.labels[:3])
        assert torch.allclose(part.mels, full.mels[:3], atol=1e-3)
    for full, part in zip(_ood_splits(default), _ood_splits(limited), strict=True):
        assert len(part) == 3 and torch.allclose(part.mels, full.mels[:3], atol=1e-3)


def test_labels_are_balanced_and_splits_disjoint(default: AudioVisualData) -> None:
    for split, n in zip(_splits(default), DEFAULT_CLIPS, strict=True):
        assert torch.equal(torch.bincount(split.labels, minlength=10), torch.full((10,), n // 10))
    for split, n in zip(_ood_splits(default), DEFAULT_OOD_CLIPS, strict=True):
        assert torch.equal(torch.bincount(split.labels, minlength=len(SCENES)), torch.full((5,), n // 5))
    ids = [set(s.clip_ids) for s in _splits(default)]
    assert sum(len(i) for i in ids) == len(set.union(*ids)) == sum(DEFAULT_CLIPS)
    clips = [{s.frames[i].numpy().tobytes() for i in range(len(s))} for s in _splits(default)]
    assert sum(len(c) for c in clips) == len(set.union(*clips)) == sum(DEFAULT_CLIPS)  # no clip twice anywhere


def test_class_information_is_in_both_modalities_but_not_trivially(default: AudioVisualData) -> None:
    train, val = default.train, default.val

    def pixels(split):
        return split.frames.float().flatten(1) / 255.0

    def mel_profile(split):  # time-averaged standardised mel: which bands sound, not when
        return default.normalise_mels(split.mels).mean(1)

    video = _nearest_class_mean(pixels(train), train.labels, pixels(val), val.labels, 10)
    audio = _nearest_class_mean(mel_profile(train), train.labels, mel_profile(val), val.labels, 10)
    assert 0.25 < video < 0.95, video  # chance is 0.1
    assert 0.25 < audio < 0.95, audio


def test_audio_and_video_of_a_clip_share_their_event_times(default: AudioVisualData) -> None:
    """The object lights up when the sound plays: a cue of the instance, beyond its class."""
    split, n_frames = default.val, default.frames_per_clip
    brightness = split.frames.float().amax(2).flatten(2).topk(20, dim=2).values.mean(2)  # (N, F): the object
    loudness = split.mels.reshape(len(split), n_frames, -1, default.n_mels).amax(-1).mean(-1)  # (N, F)
    partner = torch.arange(len(split))
    for c in range(default.num_classes):  # another clip of the same class
        members = torch.nonzero(split.labels == c).flatten()
        partner[members] = members.roll(1)
    own = _pearson_rows(brightness, loudness)
    same_class = _pearson_rows(brightness, loudness[partner])
    assert own.mean() > 0.6 and own.mean() > same_class.mean() + 0.4, (own.mean(), same_class.mean())


def test_ood_scenes_have_their_own_classes_and_statistics(default: AudioVisualData) -> None:
    ood = default.ood
    assert ood is not None and default.ood_classes == ood.num_classes == len(SCENES) == 5
    assert not set(ood.class_names) & set(default.class_names)
    for split, n in zip(_ood_splits(default), DEFAULT_OOD_CLIPS, strict=True):
        assert split.mels.shape == (n, 100, 64) and split.labels.dtype == torch.int64
        assert int(split.labels.min()) >= 0 and int(split.labels.max()) < 5
    flat = ood.train.mels.reshape(-1, 64)
    assert torch.allclose(ood.mel_mean, flat.mean(0), atol=1e-3) and not torch.allclose(ood.mel_mean, default.mel_mean)

    def profile(split):
        return ood.normalise_mels(split.mels).mean(1)

    acc = _nearest_class_mean(profile(ood.train), ood.train.labels, profile(ood.val), ood.val.labels, 5)
    assert acc > 0.5, acc  # chance is 0.2


def test_normalisation_statistics_come_from_train(default: AudioVisualData) -> None:
    x = default.train.frames.float() / 255.0
    assert np.allclose(default.frame_mean, x.mean(dim=(0, 1, 3, 4)).tolist(), atol=1e-4)
    assert np.allclose(default.frame_std, x.std(dim=(0, 1, 3, 4)).tolist(), atol=1e-4)
    z = default.normalise_mels(default.train.mels).reshape(-1, default.n_mels)
    assert torch.allclose(z.mean(0), torch.zeros(64), atol=1e-3) and torch.allclose(z.std(0), torch.ones(64), atol=1e-3)


def test_feature_options_shape_the_tensors() -> None:
    data = load_audio_visual(
        "synthetic",
        clips=(8, 4, 4),
        ood_clips=(5, 5, 5),
        n_mels=32,
        frames=6,
        frame_size=24,
        n_classes=4,
        sample_rate=16000,
    )
    assert data.train.frames.shape == (8, 6, 3, 24, 24) and data.train.mels.shape == (8, 100, 32)
    assert data.ood.val.mels.shape == (5, 100, 32) and data.num_classes == 4 and data.sample_rate == 16000
    assert torch.equal(torch.bincount(data.train.labels), torch.full((4,), 2))
    for rate, n_fft, hop in ((16000, 512, 160), (8000, 256, 80)):  # Wang's 32 ms / 10 ms
        transform = log_mel_transform(rate, 64)
        assert (transform.n_fft, transform.hop_length) == (n_fft, hop)
    spec = log_mels(torch.randn(3, 8000), log_mel_transform(8000, 64))
    assert spec.shape == (3, 100, 64)
    assert bool((spec.amax(dim=(1, 2)) - spec.amin(dim=(1, 2)) <= 100.0 + 1e-4).all())  # top_db per clip


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown audio-visual dataset"):
        load_audio_visual("kinetics")
    with pytest.raises(ValueError, match="limit"):
        load_audio_visual("synthetic", limit=0)
    with pytest.raises(ValueError, match="clips"):
        load_audio_visual("synthetic", clips=(3, 0, 1))
    with pytest.raises(ValueError, match="frames"):
        load_audio_visual("synthetic", frames=0)
    with pytest.raises(ValueError, match="sample_rate 4000 is too low"):
        load_audio_visual("synthetic", sample_rate=4000)
    with pytest.raises(ValueError, match="n_classes"):
        load_audio_visual("synthetic", n_classes=1)
    with pytest.raises(ValueError, match="clips sizes the synthetic data only"):
        load_audio_visual("vggsound", "/nowhere", clips=(1, 1, 1))
    with pytest.raises(ValueError, match="ood_clips sizes the synthetic scenes only"):
        load_audio_visual("synthetic", ood_clips=(1, 1, 1), ood_root="/nowhere")
    check_audio_visual_dataset("synthetic", None)  # embedded: nothing to check


# -------------------------------------------------------------------------------------------------- vggsound

# clip: (label, split, number of frames, frame (H, W), frame suffix, wav rate, seconds, channels, sine Hz)
_CLIPS = {
    "a": ("dog", "train", 8, (40, 48), "png", 16000, 2.0, 2, 500.0),
    "b": ("cat", "train", 3, (32, 32), "png", 16000, 0.5, 1, 500.0),
    "c": ("dog", "val", 4, (32, 32), "png", 22050, 1.0, 1, 1000.0),
    "d": ("bird", "test", 5, (20, 20), "jpg", 16000, 1.0, 1, 2000.0),
}


def _sine(hz: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t) + 0.001 * np.random.default_rng(0).standard_normal(len(t))
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def _write_labels(root: str, rows) -> None:
    with open(os.path.join(root, "labels.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip", "label", "split"])
        writer.writerows(rows)


def _write_root(root: str) -> None:
    import soundfile
    from torchvision.io import write_jpeg, write_png

    os.makedirs(os.path.join(root, "audio"))
    for clip, (_, _, n_frames, (h, w), suffix, rate, seconds, channels, hz) in _CLIPS.items():
        folder = os.path.join(root, "frames", clip)
        os.makedirs(folder)
        for k in range(n_frames):  # frame k is flat grey 10 k: the value says which frame was taken
            image = torch.full((3, h, w), 10 * k, dtype=torch.uint8)
            path = os.path.join(folder, f"{k:04d}.{suffix}")
            write_png(image, path) if suffix == "png" else write_jpeg(image, path, quality=100)
        soundfile.write(os.path.join(root, "audio", f"{clip}.wav"), _sine(hz, seconds, rate, channels), rate)
    _write_labels(root, [(clip, label, split) for clip, (label, split, *_) in _CLIPS.items()])


def _write_ood(root: str) -> None:
    import soundfile

    os.makedirs(os.path.join(root, "audio"))
    rows = [("x1", "hum", "train"), ("x2", "hiss", "train"), ("x3", "hum", "val"), ("x4", "hiss", "test")]
    for clip, *_ in rows:
        soundfile.write(os.path.join(root, "audio", f"{clip}.wav"), _sine(300.0, 1.5, 16000), 16000)
    _write_labels(root, rows)


@pytest.fixture
def vgg_root(tmp_path) -> str:
    root = str(tmp_path / "vggsound")
    _write_root(root)
    return root


@pytest.fixture
def ood_root(tmp_path) -> str:
    root = str(tmp_path / "scenes")
    _write_ood(root)
    return root


def _peak_band(mels: torch.Tensor) -> int:
    return int(mels.mean(0).argmax())


def test_vggsound_folder_loads_with_resampling_frame_choice_and_split_roles(vgg_root: str) -> None:
    check_audio_visual_dataset("vggsound", vgg_root)
    data = load_audio_visual("vggsound", vgg_root)
    assert data.name == "vggsound" and data.sample_rate == 16000 and data.ood is None and data.ood_classes == 0
    assert data.class_names == ("bird", "cat", "dog")
    assert data.train.clip_ids == ("a", "b") and data.val.clip_ids == ("c",) and data.test.clip_ids == ("d",)
    assert data.train.labels.tolist() == [2, 1] and data.val.labels.tolist() == [2] and data.test.labels.tolist() == [0]
    for split, n in zip(_splits(data), (2, 1, 1), strict=True):
        assert split.frames.shape == (n, 4, 3, 32, 32) and split.mels.shape == (n, 100, 64)
    # a: 2 s, the centre second is frames [2, 6) of 8; b: 0.5 s, all 3 frames spread over 4 (and the audio padded)
    assert data.train.frames[0, :, :, 5, 5].tolist() == [[v] * 3 for v in (20, 30, 40, 50)]
    assert data.train.frames[1, :, 0, 0, 0].tolist() == [0, 10, 10, 20]
    assert torch.all(data.test.frames[0].float().std(dim=(1, 2, 3)) < 2)  # a resized jpg stays flat
    assert float(data.train.mels[1, 60:].max() - data.train.mels[1, 60:].min()) < 1e-3  # the padded half is floor
    # c was written at 22.05 kHz: resampled, its 1 kHz sine lands in the band of a 1 kHz sine made at 16 kHz
    transform = log_mel_transform(16000, 64)
    reference = log_mels(torch.from_numpy(_sine(1000.0, 1.0, 16000)[:, 0])[None], transform)[0]
    assert _peak_band(data.val.mels[0]) == _peak_band(reference)
    low = load_audio_visual("vggsound", vgg_root, sample_rate=8000, frames=2, frame_size=16)
    assert low.sample_rate == 8000 and low.train.mels.shape == (2, 100, 64)
    assert low.train.frames.shape == (2, 2, 3, 16, 16)
    reference = log_mels(torch.from_numpy(_sine(2000.0, 1.0, 8000)[:, 0])[None], log_mel_transform(8000, 64))[0]
    assert _peak_band(low.test.mels[0]) == _peak_band(reference)  # d: 16 kHz -> 8 kHz
    limited = load_audio_visual("vggsound", vgg_root, limit=1)
    assert limited.train.clip_ids == ("a",) and limited.val.clip_ids == ("c",)


def test_an_ood_folder_replaces_the_synthetic_scenes(vgg_root: str, ood_root: str) -> None:
    check_audio_visual_dataset("vggsound", vgg_root, ood_root=ood_root)
    data = load_audio_visual("vggsound", vgg_root, ood_root=ood_root)
    assert data.ood is not None and data.ood_classes == 2 and data.ood.class_names == ("hiss", "hum")
    assert data.ood.train.mels.shape == (2, 100, 64) and data.ood.train.labels.tolist() == [1, 0]
    assert data.ood.val.clip_ids == ("x3",) and data.ood.test.clip_ids == ("x4",)
    synthetic = load_audio_visual("synthetic", clips=(10, 10, 10), ood_root=ood_root)
    assert synthetic.ood.name == "scenes" and synthetic.ood.num_classes == 2


def test_missing_root_names_the_path(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="needs a data root"):
        load_audio_visual("vggsound", None)
    missing = str(tmp_path / "nowhere")
    for call in (
        lambda: load_audio_visual("vggsound", missing),
        lambda: check_audio_visual_dataset("vggsound", missing),
    ):
        with pytest.raises(DatasetNotFoundError, match=f"{missing}: the folder does not exist"):
            call()
    with pytest.raises(DatasetNotFoundError, match=f"ood_root not found under {missing}"):
        load_audio_visual("synthetic", clips=(10, 1, 1), ood_root=missing)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("labels.csv", "labels.csv is missing"),
        ("audio/c.wav", r"1 clips .* \(first: .*c\.wav\)"),
        ("frames/b", "frames/b/ is missing"),
    ],
)
def test_missing_csv_wav_or_frames_names_it(vgg_root: str, remove: str, message: str) -> None:
    path = os.path.join(vgg_root, remove)
    if os.path.isdir(path):
        import shutil

        shutil.rmtree(path)
    else:
        os.remove(path)
    for call in (
        lambda: check_audio_visual_dataset("vggsound", vgg_root),
        lambda: load_audio_visual("vggsound", vgg_root),
    ):
        with pytest.raises(DatasetNotFoundError, match=message) as info:
            call()
        assert path in str(info.value) and "\n" not in str(info.value)


def test_a_video_without_frames_says_how_to_extract_them(vgg_root: str) -> None:
    import shutil

    shutil.rmtree(os.path.join(vgg_root, "frames", "d"))
    os.makedirs(os.path.join(vgg_root, "video"))
    video = os.path.join(vgg_root, "video", "d.mp4")
    with open(video, "wb") as f:
        f.write(b"\x00" * 16)
    with pytest.raises(DatasetNotFoundError, match="FFmpeg") as info:
        check_audio_visual_dataset("vggsound", vgg_root)
    assert video in str(info.value) and "ffmpeg -i" in str(info.value)


def test_missing_ood_wav_names_it(ood_root: str) -> None:
    os.remove(os.path.join(ood_root, "audio", "x3.wav"))
    with pytest.raises(DatasetNotFoundError, match="x3.wav"):
        check_audio_visual_dataset("synthetic", None, ood_root=ood_root)
    with pytest.raises(DatasetNotFoundError, match="x3.wav"):
        load_audio_visual("synthetic", clips=(10, 1, 1), ood_root=ood_root)
