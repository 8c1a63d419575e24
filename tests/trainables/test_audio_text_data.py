"""trainables.tasks.audio_text.data: the embedded synthetic set (sizes, determinism, captions, word table, features),
padded batches, and a tiny Clotho root (layout, resampling, split roles, word vectors, clear errors)."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.datasets import DatasetNotFoundError
from trainables.tasks.audio_text.data import (
    CAPTIONS_PER_CLIP,
    DEFAULT_CLIPS,
    PAD_ID,
    UNK,
    UNK_ID,
    AudioTextData,
    check_audio_text_dataset,
    clean_caption,
    load_audio_text,
    log_mel_transform,
    log_mels,
)
from trainables.tasks.audio_text.synthetic import synthetic_vocab

SMALL = (12, 4, 4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def default() -> AudioTextData:
    return load_audio_text("synthetic", seed=0)


@pytest.fixture(scope="module")
def small() -> AudioTextData:
    return load_audio_text("synthetic", seed=0, clips=SMALL)


def _splits(data: AudioTextData):
    return (data.train, data.val, data.test)


# ------------------------------------------------------------------------------------------------- synthetic


def test_default_sizes_five_captions_per_clip(default: AudioTextData) -> None:
    for split, n in zip(_splits(default), DEFAULT_CLIPS, strict=True):
        assert split.n_clips == n and split.n_captions == CAPTIONS_PER_CLIP * n
        assert torch.equal(torch.bincount(split.caption_clip, minlength=n), torch.full((n,), CAPTIONS_PER_CLIP))
    assert default.name == "synthetic" and default.sample_rate == 8000 and default.n_mels == 64
    assert default.trainable_words is False and default.word_dim == 64
    assert default.embeddings.shape == (len(default.vocab), 64)


def test_deterministic_in_the_seed_and_different_across_seeds(small: AudioTextData) -> None:
    same = load_audio_text("synthetic", seed=0, clips=SMALL)
    other = load_audio_text("synthetic", seed=1, clips=SMALL)
    for a, b in zip(_splits(small), _splits(same), strict=True):
        assert a.texts == b.texts and torch.equal(a.captions, b.captions)
        assert all(torch.equal(x, y) for x, y in zip(a.mels, b.mels, strict=True))
    assert small.train.texts != other.train.texts
    assert not all(
        x.shape == y.shape and torch.equal(x, y) for x, y in zip(small.train.mels, other.train.mels, strict=True)
    )
    assert torch.equal(small.embeddings, other.embeddings)  # the "pre-trained" table does not move with the seed


def test_limit_keeps_a_prefix_of_each_split(default: AudioTextData) -> None:
    limited = load_audio_text("synthetic", seed=0, limit=3)
    for full, part in zip(_splits(default), _splits(limited), strict=True):
        assert part.n_clips == 3 and part.n_captions == 15
        assert part.texts == full.texts[:15] and part.clip_ids == full.clip_ids[:3]
        assert all(torch.equal(x, y) for x, y in zip(part.mels, full.mels[:3], strict=True))


def test_splits_are_disjoint(default: AudioTextData) -> None:
    ids = [set(s.clip_ids) for s in _splits(default)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    keys = [{m.numpy().tobytes() for m in s.mels} for s in _splits(default)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert sum(len(k) for k in keys) == sum(DEFAULT_CLIPS)  # no two clips are the same audio


def test_clips_share_descriptions_yet_descriptions_vary(default: AudioTextData) -> None:
    """A caption can fit other clips than its own (retrieval is not trivial), but classes are many."""
    classes = default.train.clip_class
    counts = torch.bincount(classes)
    assert int((counts >= 2).sum()) >= 20  # many descriptions occur twice or more in train
    assert len(torch.unique(classes)) >= default.train.n_clips // 4
    twins = torch.nonzero(classes == classes[int(torch.argmax(counts[classes]))]).flatten()
    a, b = (default.train.mels[int(i)] for i in twins[:2])
    assert a.shape != b.shape or not torch.equal(a, b)  # same description, different realisation


def test_captions_of_one_clip_agree_more_than_captions_of_different_clips(default: AudioTextData) -> None:
    split = default.val
    table = F.normalize(default.embeddings, dim=1)
    words, mask = split.text_batch(torch.arange(split.n_captions))
    mean = F.normalize((table[words] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=1)
    sim = mean @ mean.T
    same = split.caption_clip[:, None] == split.caption_clip[None, :]
    off_diag = ~torch.eye(split.n_captions, dtype=torch.bool)
    same_mean, diff_mean = sim[same & off_diag].mean(), sim[~same].mean()
    assert same_mean > diff_mean + 0.1, (same_mean, diff_mean)
    # and the five captions of a clip are not all worded alike
    assert len(set(split.texts[:CAPTIONS_PER_CLIP])) > 1


def test_word_table_synonyms_close_other_concepts_nearly_orthogonal(default: AudioTextData) -> None:
    index = {w: i for i, w in enumerate(default.vocab)}
    table = default.embeddings

    def cos(a: str, b: str) -> float:
        return float(F.cosine_similarity(table[index[a]], table[index[b]], dim=0))

    assert cos("beep", "whistle") > 0.6 and cos("high", "shrill") > 0.6 and cos("twice", "two") > 0.6
    assert abs(cos("beep", "hiss")) < 0.35 and abs(cos("high", "low")) < 0.35 and abs(cos("beep", UNK)) < 0.35
    assert default.vocab == synthetic_vocab() and default.vocab[PAD_ID] == "<pad>" and default.vocab[UNK_ID] == UNK
    assert float(table[PAD_ID].abs().sum()) == 0.0
    assert torch.allclose(table[1:].norm(dim=1), torch.ones(len(table) - 1), atol=1e-5)
    every_word = {w for t in default.train.texts for w in clean_caption(t)}
    assert every_word <= set(default.vocab)  # the grammar never produces an unknown word


def test_clean_caption_lowercases_and_splits_on_punctuation() -> None:
    assert clean_caption("A HIGH beep, then... a (low) hiss!") == ["a", "high", "beep", "then", "a", "low", "hiss"]
    assert clean_caption("high-pitched") == ["high-pitched"]  # hyphens are kept, as Xie et al.


def test_log_mels_shapes_and_finite(small: AudioTextData) -> None:
    for split in _splits(small):
        for m, n in zip(split.mels, split.mel_lengths, strict=True):
            assert m.dtype == torch.float32 and m.shape == (int(n), 64) and torch.isfinite(m).all()
    quiet = load_audio_text("synthetic", seed=0, clips=(2, 1, 1), n_mels=32)
    assert quiet.n_mels == 32 and quiet.train.mels[0].shape[1] == 32
    transform = log_mel_transform(8000, 64)  # 40 ms window = 320 samples -> n_fft 512, hop 160
    assert (transform.n_fft, transform.win_length, transform.hop_length) == (512, 320, 160)
    waves = [torch.randn(8000), torch.randn(3000)]
    together = log_mels(waves, transform)
    assert [m.shape for m in together] == [(51, 64), (1 + 3000 // 160, 64)]
    assert torch.allclose(together[1], log_mels(waves[1:], transform)[0], atol=1e-4)  # chunking changes nothing


def test_padded_batch_shapes_and_masks(small: AudioTextData) -> None:
    split = small.train
    idx = torch.tensor([0, 1, 7, 33, 59])  # captions 0 and 1 share clip 0
    batch = split.batch(idx)
    clips = idx // CAPTIONS_PER_CLIP
    t, w = int(split.mel_lengths[clips].max()), int(split.caption_lengths[idx].max())
    assert batch.mels.shape == (5, t, 64) and batch.frame_mask.shape == (5, t)
    assert batch.words.shape == (5, w) and batch.word_mask.shape == (5, w)
    assert torch.equal(batch.clips, clips) and batch.clips[0] == batch.clips[1]
    assert torch.equal(batch.frame_mask.sum(1), split.mel_lengths[clips])
    assert torch.equal(batch.word_mask.sum(1), split.caption_lengths[idx])
    for row, c in enumerate(clips.tolist()):
        n = int(split.mel_lengths[c])
        assert torch.equal(batch.mels[row, :n], split.mels[c]) and float(batch.mels[row, n:].abs().sum()) == 0.0
    assert bool((batch.words[~batch.word_mask] == PAD_ID).all())
    assert bool((batch.words[batch.word_mask] != PAD_ID).all())
    mels, mask = split.audio_batch([2, 3])
    assert mels.shape[0] == 2 and torch.equal(mask.sum(1), split.mel_lengths[[2, 3]])


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown audio-text dataset"):
        load_audio_text("audiocaps")
    with pytest.raises(ValueError, match="limit"):
        load_audio_text("synthetic", limit=0)
    with pytest.raises(ValueError, match="clips"):
        load_audio_text("synthetic", clips=(3, 0, 1))
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio_text("synthetic", clips=SMALL, sample_rate=4000)
    check_audio_text_dataset("synthetic", None)  # embedded: nothing to check


# ---------------------------------------------------------------------------------------------------- clotho

_CLOTHO = {  # folder: [(name on disk, name in the CSV, seconds, channels, captions)]
    "development": [
        (
            "dev_a.wav",
            "dev_a.wav",
            1.0,
            1,
            ["A dog barks loudly.", "A dog is barking", "Dogs bark", "A dog barks", "Barking, a dog."],
        ),
        (
            "dev b.wav",
            " dev b.wav",
            0.5,
            2,
            ["Rain falls on a roof.", "Rain on a roof", "It rains", "Rain falls", "Heavy rain falls."],
        ),
    ],
    "validation": [("val_a.wav", "val_a.wav", 0.75, 1, ["A cat meows."] * 5)],
    "evaluation": [("eval_a.wav", "eval_a.wav", 1.0, 1, ["Birds chirp at dawn."] * 5)],
}


def _write_clotho(root: str) -> None:
    import soundfile

    rng = np.random.default_rng(0)
    for folder, rows in _CLOTHO.items():
        os.makedirs(os.path.join(root, folder))
        with open(os.path.join(root, f"clotho_captions_{folder}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
            for disk, listed, seconds, channels, captions in rows:
                writer.writerow([listed, *captions])
                wave = 0.1 * rng.standard_normal((int(seconds * 44100), channels)).astype(np.float32)
                soundfile.write(os.path.join(root, folder, disk), wave, 44100)


@pytest.fixture
def clotho_root(tmp_path) -> str:
    pytest.importorskip("soundfile")
    root = str(tmp_path / "clotho")
    os.makedirs(root)
    _write_clotho(root)
    return root


def test_clotho_loads_with_resampling_and_split_roles(clotho_root: str) -> None:
    check_audio_text_dataset("clotho", clotho_root)
    data = load_audio_text("clotho", clotho_root, seed=0)
    assert data.name == "clotho" and data.sample_rate == 16000 and data.trainable_words is True
    assert data.train.clip_ids == ("dev_a.wav", "dev b.wav")  # development -> train; CSV names stripped
    assert data.val.clip_ids == ("val_a.wav",) and data.test.clip_ids == ("eval_a.wav",)
    # 44.1 kHz resampled to 16 kHz, hop 20 ms = 320 samples: 1 + n // 320 frames; stereo mixed to mono
    assert [m.shape for m in data.train.mels] == [(1 + 16000 // 320, 64), (1 + 8000 // 320, 64)]
    assert data.val.mels[0].shape == (1 + 12000 // 320, 64)
    assert data.train.n_captions == 10 and torch.equal(data.train.caption_clip, torch.arange(10) // 5)
    assert all(torch.isfinite(m).all() for m in data.train.mels)
    # learned table: vocabulary of the training captions only, other words are UNK
    assert "dog" in data.vocab and "cat" not in data.vocab
    index = {w: i for i, w in enumerate(data.vocab)}
    assert data.val.captions[0, :3].tolist() == [index["a"], UNK_ID, UNK_ID]  # "a cat meows"
    assert data.embeddings.shape == (len(data.vocab), 64) and float(data.embeddings[PAD_ID].abs().sum()) == 0
    limited = load_audio_text("clotho", clotho_root, seed=0, limit=1)
    assert limited.train.clip_ids == ("dev_a.wav",) and limited.train.n_captions == 5


def test_clotho_with_a_word_vector_file_is_frozen(clotho_root: str, tmp_path) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text("4 3\ndog 1 0 0\nDog 9 9 9\nrain 0 1 0\nA 0 0 1\nbirds 0.5 0.5 0\n", encoding="utf-8")
    check_audio_text_dataset("clotho", clotho_root, word_vectors=str(path))
    data = load_audio_text("clotho", clotho_root, seed=0, word_vectors=str(path))
    assert data.trainable_words is False and data.word_dim == 3
    assert data.vocab == ("<pad>", UNK, "a", "birds", "dog", "rain")  # test-split words may be looked up
    index = {w: i for i, w in enumerate(data.vocab)}
    assert data.embeddings[index["dog"]].tolist() == [1, 0, 0]  # the exact form wins over a case variant
    assert data.embeddings[index["a"]].tolist() == [0, 0, 1]  # a case variant when no exact form exists
    unk = data.embeddings[UNK_ID]
    assert math.isclose(float(unk.norm()), 1.0, rel_tol=1e-5)
    assert data.train.captions[0, :3].tolist() == [index["a"], index["dog"], UNK_ID]  # "a dog barks"


def test_clotho_missing_root_names_the_path(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="needs a data root"):
        load_audio_text("clotho", None)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=f"{missing}: the folder does not exist"):
        load_audio_text("clotho", missing)
    with pytest.raises(DatasetNotFoundError, match=f"{missing}: the folder does not exist"):
        check_audio_text_dataset("clotho", missing)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("clotho_captions_validation.csv", "clotho_captions_validation.csv is missing"),
        ("evaluation", "evaluation/ is missing"),
    ],
)
def test_clotho_missing_csv_or_folder_names_it(clotho_root: str, remove: str, message: str) -> None:
    path = os.path.join(clotho_root, remove)
    if os.path.isdir(path):
        import shutil

        shutil.rmtree(path)
    else:
        os.remove(path)
    calls = (lambda: check_audio_text_dataset("clotho", clotho_root), lambda: load_audio_text("clotho", clotho_root))
    for call in calls:
        with pytest.raises(DatasetNotFoundError, match=message) as info:
            call()
        assert path in str(info.value) and "\n" not in str(info.value)


def test_missing_word_vector_file_is_named(clotho_root: str, tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="none.txt is not a file"):
        check_audio_text_dataset("clotho", clotho_root, word_vectors=str(tmp_path / "none.txt"))


def test_clotho_wav_listed_but_absent_is_reported(clotho_root: str) -> None:
    os.remove(os.path.join(clotho_root, "development", "dev b.wav"))
    with pytest.raises(DatasetNotFoundError, match=r"1 wav files .* \(first: dev b.wav\)"):
        load_audio_text("clotho", clotho_root)
