"""Audio-caption retrieval metrics as Xie et al. define them (postprocessing/xmodal_retrieval.py).

Shape convention: S (n_audio, n_text) scores audio clip a against caption t; ``caption_clip`` (n_text,) gives
each caption's clip, an index into the audio rows. A clip has one or more captions (5 in Clotho).

Text->audio: each caption queries every clip and exactly one is relevant, so R@K is a hit rate. Audio->text:
each clip queries every caption and its own captions are relevant, so R@K = (# relevant in the top K) /
(# relevant), a fraction and not a hit rate; HR@K, the hit rate, is reported beside it. mAP is the mean over
queries of the average precision over the full ranking, with no cut-off.

Ties are ranked pessimistically: a relevant item tied in score with irrelevant ones ranks after all of them.
Ranking ties by index would score a collapsed encoder (every score equal) perfectly whenever the captions
happen to be stored in clip order, as Clotho's are, and collapse is a failure mode of hard negative selection.
The order among tied relevant items changes no metric.

- [0] Xie et al., 2023, On Negative Sampling for Contrastive Audio-Text Retrieval, arXiv:2211.04070
"""

from __future__ import annotations

import numpy as np
import torch

KS = (1, 5, 10)
_CHUNK_ELEMENTS = 1 << 21  # bounds the (captions, n_text) comparison blocks of audio->text to ~2M entries


def retrieval_metrics(S: torch.Tensor | np.ndarray, caption_clip: torch.Tensor | np.ndarray) -> dict[str, float]:
    """mAP, R@1/5/10 both ways, audio->text HR@1/5/10, and ``map_mean``, the mean of the two mAPs.

    Only the rank of each relevant pair is needed, and each caption is relevant to exactly one query per
    direction, so both directions come from counting, per caption, the items that outrank its relevant pair:
    n_text x n_audio comparisons for text->audio and n_text x n_text for audio->text, in bounded blocks, and no
    full sort. 1000 clips x 5000 captions take a fraction of a second.

    Args:
        S: scores, higher is more similar. Shape: (n_audio, n_text).
        caption_clip: clip index of each caption, in 0..n_audio-1, every clip at least once. Shape: (n_text,).

    Returns:
        ``t2a_map``, ``t2a_r1``, ``t2a_r5``, ``t2a_r10``, ``a2t_map``, ``a2t_r1``, ``a2t_r5``, ``a2t_r10``,
        ``a2t_hr1``, ``a2t_hr5``, ``a2t_hr10`` and ``map_mean``, as floats in [0, 1].

    Raises:
        ValueError: S not 2-D or holding NaN; caption_clip of the wrong shape, out of range, or leaving a clip
            without a caption (its audio->text AP would be undefined).
    """
    s = _numpy(S).astype(np.float64, copy=False)  # exact for float16/32, so ties survive
    clip = _numpy(caption_clip)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"`S` must have shape (n_audio, n_text), both >= 1; got {s.shape}")
    if np.isnan(s).any():
        raise ValueError("`S` holds NaN, which has no rank")
    n_audio, n_text = s.shape
    if clip.shape != (n_text,) or not np.issubdtype(clip.dtype, np.integer):
        raise ValueError(f"`caption_clip` must be integers of shape ({n_text},); got {clip.dtype} {clip.shape}")
    if clip.min() < 0 or clip.max() >= n_audio:
        raise ValueError(f"`caption_clip` must lie in 0..{n_audio - 1}; got {clip.min()}..{clip.max()}")
    n_rel = np.bincount(clip, minlength=n_audio)
    if (n_rel == 0).any():
        raise ValueError(f"`caption_clip` gives no caption to clip {int(np.argmin(n_rel))}")
    clip = clip.astype(np.int64, copy=False)
    captions = np.arange(n_text)
    pos = s[clip, captions]

    # Text->audio: the one relevant clip ranks after every clip scoring at least as high (itself included).
    t2a_rank = (s >= pos[None, :]).sum(axis=0)
    metrics = {"t2a_map": float(np.mean(1.0 / t2a_rank))}
    metrics.update({f"t2a_r{k}": float(np.mean(t2a_rank <= k)) for k in KS})

    # Audio->text: caption t in its clip's query ranks after every caption scoring higher, every irrelevant one
    # tying with it, and the relevant ones tying with it at a lower index (itself included).
    a2t_rank = np.empty(n_text, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // n_text)
    for start in range(0, n_text, step):
        idx = captions[start:start + step]
        rows, p = s[clip[idx]], pos[idx, None]
        relevant = clip[None, :] == clip[idx, None]
        ahead_in_tie = ~relevant | (captions[None, :] <= idx[:, None])
        a2t_rank[idx] = (rows > p).sum(axis=1) + ((rows == p) & ahead_in_tie).sum(axis=1)
    # The j-th best relevant caption of a query (j from 1) at rank r has precision j / r.
    order = np.lexsort((a2t_rank, clip))  # by clip, then by rank
    first = np.cumsum(n_rel) - n_rel
    j = np.arange(n_text) - first[clip[order]] + 1
    ap = np.bincount(clip[order], weights=j / a2t_rank[order], minlength=n_audio) / n_rel
    metrics["a2t_map"] = float(ap.mean())
    hits = {k: np.bincount(clip, weights=a2t_rank <= k, minlength=n_audio) for k in KS}
    metrics.update({f"a2t_r{k}": float(np.mean(hits[k] / n_rel)) for k in KS})
    metrics.update({f"a2t_hr{k}": float(np.mean(hits[k] > 0)) for k in KS})
    metrics["map_mean"] = (metrics["t2a_map"] + metrics["a2t_map"]) / 2
    return metrics


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()  # numpy has no bfloat16
    return np.asarray(x)
