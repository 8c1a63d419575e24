"""The ``clotho`` reader: Clotho v2's caption CSVs and wav folders from a local root, with the word table from a
word2vec/GloVe text file or, without one, a table to learn.

Kept apart from :mod:`~trainables.tasks.audio_text.data` so that the file layout, its one-line errors and the
word-vector parsing live with the one source that needs them.
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np
import torch

from trainables.datasets import DatasetNotFoundError, read_wav, require_root
from trainables.errors import UserError
from trainables.tasks.audio_text.data import (
    PAD,
    PAD_ID,
    UNK,
    UNK_ID,
    AudioTextData,
    AudioTextSplit,
    _encode,
    clean_caption,
    log_mel_transform,
    log_mels,
)

# Clotho v2 (Zenodo 4783391): the caption CSVs and the folders the three audio archives extract to.
CLOTHO_SPLITS: tuple[tuple[str, str], ...] = (("train", "development"), ("val", "validation"), ("test", "evaluation"))
_FALLBACK = "or use the embedded `dataset: synthetic`"
_NO_DOWNLOAD = "download Clotho v2 from Zenodo yourself; nothing is downloaded at run time"
_LAYOUT = (
    "clotho_captions_{development,validation,evaluation}.csv and the development/ validation/ evaluation/ wav folders"
)


def _require_root(data_root: str | None) -> str:
    return require_root(data_root, "clotho", _LAYOUT, _NO_DOWNLOAD, _FALLBACK)


def _clotho_paths(root: str, folder: str) -> tuple[str, str]:
    """(captions CSV, wav folder) of one Clotho split, or a one-line error naming the one that is missing."""
    csv_path = os.path.join(root, f"clotho_captions_{folder}.csv")
    wav_dir = os.path.join(root, folder)
    if not os.path.isfile(csv_path):
        raise DatasetNotFoundError(
            f"clotho captions not found: {csv_path} is missing (the Zenodo file of that name goes in the data root; "
            f"{_NO_DOWNLOAD}), {_FALLBACK}"
        )
    if not os.path.isdir(wav_dir):
        raise DatasetNotFoundError(
            f"clotho audio not found: {wav_dir}/ is missing (extract clotho_audio_{folder}.7z into the data root; "
            f"{_NO_DOWNLOAD}), {_FALLBACK}"
        )
    return csv_path, wav_dir


def _read_clotho_csv(path: str) -> list[tuple[str, list[str]]]:
    """(file name, captions) per row; names are stripped (some Clotho names carry stray spaces)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            cap_cols = [c for c in fields if re.fullmatch(r"caption_\d+", c)]
            cap_cols.sort(key=lambda c: int(c.split("_")[-1]))
            if "file_name" not in fields or not cap_cols:
                raise UserError(f"{path} must have the columns file_name and caption_1 .. caption_5, got {fields}; "
                                "use Clotho's own captions CSV")
            rows = []
            for n, row in enumerate(reader, start=2):
                name = (row["file_name"] or "").strip()  # a short row leaves its last cells None
                if not name:
                    raise UserError(f"{path} line {n}: empty file_name; fill it in or drop that row")
                rows.append((name, [row[c] or "" for c in cap_cols]))
            return rows
    except (UnicodeDecodeError, csv.Error) as err:  # a binary file, or a broken quote
        raise UserError(f"{path} is not a readable UTF-8 CSV ({err}); use Clotho's own captions CSV") from None


def _load_clotho(
    root: str, seed: int, limit: int | None, rate: int, n_mels: int, word_dim: int, word_vectors: str | None
) -> AudioTextData:
    rows, wavs = {}, {}
    for role, folder in CLOTHO_SPLITS:
        csv_path, wav_dir = _clotho_paths(root, folder)
        rows[role] = _read_clotho_csv(csv_path)[:limit]
        on_disk = {f.strip(): os.path.join(wav_dir, f) for f in os.listdir(wav_dir) if f.lower().endswith(".wav")}
        missing = [name for name, _ in rows[role] if name not in on_disk]
        if missing:
            raise DatasetNotFoundError(
                f"clotho audio incomplete: {len(missing)} wav files listed in {csv_path} are not in {wav_dir}/ "
                f"(first: {missing[0]}); re-extract clotho_audio_{folder}.7z there"
            )
        wavs[role] = on_disk
    tokens = {role: [clean_caption(c) for _, caps in rows[role] for c in caps] for role in rows}
    if word_vectors is None:
        # No pre-trained vectors: the table is learned from the training captions. A frozen random table would
        # make caption-caption similarity (S_tt, the text-based selections) meaningless, so it must be trained.
        vocab = (PAD, UNK, *sorted({w for toks in tokens["train"] for w in toks}))
        rng = np.random.default_rng([seed, 5])
        table = rng.standard_normal((len(vocab), word_dim))
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        trainable = True
    else:
        # Frozen vectors as the paper; words of every split may be looked up (a pre-trained table is not fitted
        # on them), words the file lacks become UNK.
        wanted = {w for toks in tokens.values() for caption in toks for w in caption}
        found = read_word_vectors(word_vectors, wanted)
        if not found:
            raise UserError(f"`word_vectors` {word_vectors} holds no vector for any caption word; give a "
                            "word2vec/GloVe text file (`word v1 v2 ...` per line), or leave word_vectors unset to "
                            "learn the table")
        vocab = (PAD, UNK, *sorted(found))
        table = np.stack([np.zeros_like(next(iter(found.values())))] * 2 + [found[w] for w in vocab[2:]])
        trainable = False
    table[PAD_ID] = 0.0
    table[UNK_ID] = _unk_vector(table[2:], seed)
    index = {w: i for i, w in enumerate(vocab)}
    transform = log_mel_transform(rate, n_mels)
    splits = []
    for role, _ in CLOTHO_SPLITS:
        mels: list[torch.Tensor] = []
        for start in range(0, len(rows[role]), 32):  # bounds the waveforms held at once (Clotho clips: 15-30 s)
            part = [read_wav(wavs[role][name], rate) for name, _ in rows[role][start : start + 32]]
            mels += log_mels(part, transform, chunk=32)
        texts, ids = [], []
        caption_clip = []
        for i, (name, caps) in enumerate(rows[role]):
            texts += caps
            caption_clip += [i] * len(caps)
            ids.append(name)
        words, lengths = _encode(tokens[role], index)
        splits.append(
            AudioTextSplit(
                mels=tuple(mels),
                mel_lengths=torch.tensor([m.shape[0] for m in mels], dtype=torch.int64),
                captions=words,
                caption_lengths=lengths,
                caption_clip=torch.tensor(caption_clip, dtype=torch.int64),
                clip_ids=tuple(ids),
                clip_class=torch.full((len(ids),), -1, dtype=torch.int64),
                texts=tuple(texts),
            )
        )
    embeddings = torch.from_numpy(np.asarray(table, dtype=np.float32))
    return AudioTextData("clotho", *splits, vocab, embeddings, trainable, rate, n_mels)


def read_word_vectors(path: str, words: set[str]) -> dict[str, np.ndarray]:
    """The vectors of ``words`` in a word2vec/GloVe text file, streamed (the file may hold millions of words).

    A word2vec header line (``count dim``) is skipped. A caption word (lowercase) is taken as written when the
    file has it, else from the file's first case variant (GoogleNews vectors are case-sensitive).
    """
    found: dict[str, np.ndarray] = {}
    exact: set[str] = set()
    dim = None
    with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            parts = line.rstrip().split(" ")
            if len(parts) < 2 or (n == 0 and len(parts) == 2 and all(p.isdigit() for p in parts)):
                continue
            key = parts[0] if parts[0] in words else parts[0].lower()
            if key not in words or key in exact or (key in found and key != parts[0]):
                continue
            if key == parts[0]:
                exact.add(key)
            try:
                vec = np.asarray(parts[1:], dtype=np.float64)
            except ValueError:
                raise UserError(f"{path} line {n + 1}: the values after the word are not all numbers; give a "
                                "word2vec/GloVe text file (`word v1 v2 ...` per line)") from None
            if dim is None:
                dim = len(vec)
            elif len(vec) != dim:
                raise UserError(f"{path} line {n + 1}: {len(vec)} values where earlier lines had {dim}; give a "
                                "word2vec/GloVe text file with one vector size")
            found[key] = vec
    return found


def _unk_vector(table: np.ndarray, seed: int) -> np.ndarray:
    """A unit vector far from every word, as the paper's UNK (|cos| <= 0.25 to the vocabulary): best of 64 draws."""
    rng = np.random.default_rng([seed, 7])
    cand = rng.standard_normal((64, table.shape[1]))
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    rows = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    worst = np.abs(cand @ rows.T).max(axis=1) if len(rows) else np.zeros(len(cand))
    return cand[int(np.argmin(worst))]
