"""Object videos in rooms for the temporal task (Aubret et al.), as whole tensors in memory.

Every loader returns the same :class:`TemporalData`: three splits of frames, one row per frame, grouped by object
(an object's frames are contiguous and in video order), each frame labelled with its object, category and room
(context). The time-based positive constructor walks these videos; the odd-one-out evaluation scores category,
context and object levels on the ``test`` (or ``val``) objects, which training never sees.

Splits follow the paper's rule (``scripts/construct_mvi.py``): per category, the j-th object goes to ``test`` if
``j % 10 == 9``, to ``val`` if ``j % 10 == 8``, else to ``train``. So the sweep ranks on unseen objects of seen
categories, and no object is in two splits.

The room (context) of a frame is the room of its category under a room map: categories never move between rooms,
only the map decides which objects share a room. ``room_map`` is one of

- ``"balanced"``: the fixed assignment (synthetic) or the context JSON as given (MVImgNet);
- ``"random"`` / ``"random:K"``: the paper's control (``room_assignment_balanced_random_{0,1}.json``): the same
  room sizes with the categories shuffled across rooms, from ``seed`` (or from ``K``, to keep one control map
  across seeds), redrawn until the grouping differs from the balanced one;
- a path to a JSON (synthetic only; for MVImgNet pass it as ``context_json``).

Datasets:

- ``synthetic`` (default, embedded): rendered object videos, see
  :func:`~trainables.tasks.temporal.synthetic.render_object`;
- ``mvimgnet`` (:mod:`~trainables.tasks.temporal.mvimgnet`): a local MVImgNet root with a parquet index (layout
  in :func:`check_temporal_dataset`).

This module holds what both sources share: the types, the entry points, the room maps and the split rule. The
sources import it, and it imports them inside the entry points only, so the import graph stays acyclic.

Nothing is downloaded: a missing dataset raises :class:`~trainables.datasets.DatasetNotFoundError` with a
one-line fix.

- [0] Aubret et al., 2024, Learning Object Semantic Similarity with Self-Supervision
  (github.com/neuroai-arena/ObjectSemanticSimilarity)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainables.datasets import DatasetNotFoundError
from trainables.errors import UserError

DATASETS: tuple[str, ...] = ("synthetic", "mvimgnet")
DEFAULT_IMAGE_SIZE = {"synthetic": 32, "mvimgnet": 64}
UNCERTAIN = "uncertain"  # the paper's room for categories it could not place; dropped, compared case-insensitively

_JSON_FORMAT = "a JSON {room: [category, ...]} as the paper's utils/room_assignment_balanced.json, or {category: room}"


# ----------------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, eq=False)
class TemporalSplit:
    """One split, one row per frame; an object's frames are contiguous and in video order.

    Attributes:
        frames: RGB frames. Shape: (N, 3, H, W), uint8.
        obj: global object id (unique across splits). Shape: (N,), int64.
        labels: the category, an index into ``TemporalData.category_names``: the class the probes predict.
            Shape: (N,), int64.
        room: room index into ``TemporalData.room_names`` (the category's room under the map). Shape: (N,), int64.
        frame_index: position of the frame in its object's video, 0..length-1 (the rank among the frames kept, so
            that ``k + delta`` is always a valid neighbour inside the video). Shape: (N,), int64.
    """

    frames: torch.Tensor
    obj: torch.Tensor
    labels: torch.Tensor
    room: torch.Tensor
    frame_index: torch.Tensor

    def __post_init__(self) -> None:
        n = int(self.frames.shape[0])
        if self.frames.dtype != torch.uint8 or self.frames.ndim != 4 or self.frames.shape[1] != 3:
            raise ValueError(f"frames must be uint8 (N, 3, H, W), got {self.frames.dtype} {tuple(self.frames.shape)}")
        for field in ("obj", "labels", "room", "frame_index"):
            value = getattr(self, field)
            if value.dtype != torch.int64 or value.shape != (n,):
                raise ValueError(f"{field} must be int64 of shape ({n},), got {value.dtype} {tuple(value.shape)}")
        # The temporal sampler indexes neighbours as row + delta: that is only right if every object is one run of
        # rows numbered 0..length-1.
        starts, lengths = _runs(self.obj)
        if len(np.unique(self.obj.numpy())) != len(starts):
            raise ValueError("every object's frames must be contiguous rows")
        expected = np.arange(n) - np.repeat(starts, lengths)
        if not np.array_equal(self.frame_index.numpy(), expected):
            raise ValueError("frame_index must count 0..length-1 within each object, in row order")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def object_lengths(self) -> torch.Tensor:
        """Frames per object, in row order (the order of :attr:`object_ids`). Shape: (n_objects,), int64."""
        return torch.from_numpy(_runs(self.obj)[1])

    @property
    def object_starts(self) -> torch.Tensor:
        """First row of every object. Shape: (n_objects,), int64."""
        return torch.from_numpy(_runs(self.obj)[0])

    @property
    def object_ids(self) -> torch.Tensor:
        """Global id of every object, in row order. Shape: (n_objects,), int64."""
        return self.obj[self.object_starts]

    @property
    def n_objects(self) -> int:
        return len(_runs(self.obj)[0])


def _runs(obj: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the runs of equal consecutive values."""
    ids = obj.numpy()
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1]).astype(np.int64)
    return starts, np.diff(np.append(starts, len(ids))).astype(np.int64)


@dataclass(frozen=True, eq=False)
class TemporalData:
    """A dataset split by role, with its room map and the frame statistics encoders normalise with.

    ``category_room[c]`` is the room of category ``c`` under the map named by ``room_map``. ``frame_mean`` /
    ``frame_std`` are per channel in [0, 1] units, from the train split only.
    """

    name: str
    train: TemporalSplit
    val: TemporalSplit
    test: TemporalSplit
    category_room: tuple[int, ...]
    n_rooms: int
    n_categories: int
    room_names: tuple[str, ...]
    category_names: tuple[str, ...]
    frame_mean: tuple[float, float, float]
    frame_std: tuple[float, float, float]
    room_map: str

    @property
    def pretrain(self) -> TemporalSplit:
        """The frames pre-training sees: the train split (the paper builds its sequences from train objects)."""
        return self.train

    @property
    def object_lengths(self) -> torch.Tensor:
        """Frames per train object, in the train split's row order: what the clip/sequence builder cuts."""
        return self.train.object_lengths

    @property
    def image_size(self) -> int:
        return int(self.train.frames.shape[-1])


# ----------------------------------------------------------------------------------------------- entry points


def load_temporal(
    name: str,
    data_root: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    *,
    room_map: str = "balanced",
    context_json: str | None = None,
    n_categories: int = 8,
    n_rooms: int = 4,
    objects_per_category: int = 10,
    frames_per_object: int = 12,
    image_size: int | None = None,
) -> TemporalData:
    """Load dataset ``name`` with its room map, deterministically in ``seed``.

    Args:
        name: one of :data:`DATASETS`. ``synthetic`` is embedded and ignores ``data_root``.
        data_root: the MVImgNet folder (layout in :func:`check_temporal_dataset`).
        seed: generates the synthetic objects and the ``"random"`` room map (real frames do not depend on it).
        limit: keep at most this many objects per split (whole videos, the categories taken in turn): smoke tests.
        room_map: ``"balanced"``, ``"random"``, ``"random:K"`` or (synthetic) a JSON path; see the module doc.
        context_json: MVImgNet's category -> room JSON (default ``<data_root>/room_assignment.json``); categories
            it puts in "Uncertain" or leaves out are dropped, as the paper does.
        n_categories, n_rooms, objects_per_category, frames_per_object: size of the synthetic world.
        image_size: frames are square, this many pixels a side (default 32 synthetic, 64 MVImgNet).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown temporal dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    if _is_path(room_map) and not (room_map.endswith(".json") or os.path.isfile(os.path.expanduser(room_map))):
        raise ValueError(f"room_map must be 'balanced', 'random', 'random:K' or a JSON file, got {room_map!r}")
    size = DEFAULT_IMAGE_SIZE[name] if image_size is None else int(image_size)
    if size < 8:
        raise ValueError(f"image_size must be >= 8, got {size}")
    if name == "synthetic":
        if context_json is not None:
            raise UserError(_SYNTHETIC_CONTEXT_JSON)
        from trainables.tasks.temporal.synthetic import _load_synthetic  # it imports this module: not at the top

        return _load_synthetic(
            seed, limit, room_map, n_categories, n_rooms, objects_per_category, frames_per_object, size
        )
    if _is_path(room_map):
        raise ValueError("for mvimgnet pass the room JSON as context_json; room_map is 'balanced' or 'random[:K]'")
    from trainables.tasks.temporal.mvimgnet import _load_mvimgnet, _require_root

    return _load_mvimgnet(_require_root(data_root), context_json, seed, limit, room_map, size)


_SYNTHETIC_CONTEXT_JSON = (
    "`context_json` applies to dataset mvimgnet only (the synthetic world has its own rooms); remove context_json "
    "or set dataset: mvimgnet"
)


def check_temporal_dataset(name: str, data_root: str | None, context_json: str | None = None) -> None:
    """Fail fast, before a sweep starts, when the dataset is not where the user said (no image is decoded).

    MVImgNet layout (MVImgNet's own folders plus one index)::

        data_root/index.parquet                      one row per frame: category, object, frame, and optionally
                                                     partition (train / val / test) and path
        data_root/<category>/<object>/images/*.jpg   MVImgNet's folders as unzipped (or .png)
        data_root/room_assignment.json               or context_json: {room: [category, ...]} or {category: room}

    ``category`` is MVImgNet's class label (a number or a name) and ``object`` its instance id. ``frame`` orders the
    frames of an object: an integer is the 0-based position of the image in the sorted listing of the object's
    ``images/`` folder, a string is the image's file name there. A ``path`` column (relative to ``data_root``)
    overrides that lookup. Without ``partition`` the paper's rule is applied with j = the object's rank in its
    category in sorted order of object ids (the paper used ``os.listdir`` order, which the file system decides, so
    use its split files or a ``partition`` column to reproduce its exact split). Instead of ``index.parquet`` the
    paper's own ``dataset_{train,val,test}_all3.parquet`` (from ``scripts/construct_mvi.py``, with ``path``) are
    read too, the partition then taken from the file name (their ``frame`` counts across a category: only its order
    is used). A ``length`` column is not needed: an object's length is the number of its rows.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown temporal dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "synthetic":
        if context_json is not None:
            raise UserError(_SYNTHETIC_CONTEXT_JSON)
        return
    from trainables.tasks.temporal.mvimgnet import (
        _context_path,
        _image_paths,
        _keep_assigned,
        _read_index,
        _require_root,
    )

    root = _require_root(data_root)
    rows = _read_index(root)
    assignment = _read_context_json(_context_path(root, context_json))
    rows = _keep_assigned(rows, assignment, _context_path(root, context_json))
    _image_paths(root, rows, check_only=True)


# ------------------------------------------------------------------------------------------------- room maps


def _is_path(room_map: str) -> bool:
    return not (room_map == "balanced" or re.fullmatch(r"random(:\d+)?", room_map))


def _random_seed(room_map: str, seed: int) -> int:
    return int(room_map.split(":", 1)[1]) if ":" in room_map else seed


def random_room_map(category_room: Sequence[int], seed: int) -> tuple[int, ...]:
    """The paper's control: each room keeps its number of categories, the categories are shuffled across rooms.

    Redrawn (deterministically) while the grouping equals the given one, so the control is never the original in
    disguise; when no other grouping exists (one room, or one category per room) the shuffle is returned as is.
    """
    rooms = np.asarray(category_room, dtype=np.int64)
    original = _grouping(rooms)
    rng = np.random.default_rng([seed, 11])
    can_differ = len(set(rooms.tolist())) > 1 and len(original) < len(rooms)
    for _ in range(1000):
        shuffled = rooms[rng.permutation(len(rooms))]
        if not can_differ or _grouping(shuffled) != original:
            break
    return tuple(int(r) for r in shuffled)


def _grouping(rooms: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(rooms == r).tolist()) for r in np.unique(rooms)}


def _read_context_json(path: str) -> dict[str, str]:
    """{category: room name} from either JSON form; category keys as strings (MVImgNet's labels are numbers)."""
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"room assignment not found: {path} is missing (expected {_JSON_FORMAT})")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not a readable JSON ({str(err).splitlines()[0]}); expected {_JSON_FORMAT}") from err
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} must hold a non-empty object: {_JSON_FORMAT}")
    out: dict[str, str] = {}
    if all(isinstance(v, list) for v in raw.values()):
        for room, categories in raw.items():
            for c in categories:
                if str(c) in out and out[str(c)] != str(room):
                    raise UserError(
                        f"{path}: category {c} is in two rooms, {out[str(c)]!r} and {room!r}; keep it in one"
                    )
                out[str(c)] = str(room)
    elif all(isinstance(v, (str, int)) for v in raw.values()):
        out = {str(c): str(room) for c, room in raw.items()}
    else:
        raise UserError(f"{path} mixes forms; expected {_JSON_FORMAT}")
    return out


def _synthetic_room_map(path: str, category_names: Sequence[str], room_names: Sequence[str]) -> tuple[int, ...]:
    """A JSON map for the synthetic world: categories by name or index, rooms by name or index."""
    assignment = _read_context_json(os.path.expanduser(path))
    out = []
    for c, cname in enumerate(category_names):
        room = assignment.get(cname, assignment.get(str(c)))
        if room is None or room.lower() == UNCERTAIN:
            raise UserError(f"{path} does not put synthetic category {cname!r} (index {c}) in a room; add it to one")
        if room in room_names:
            out.append(room_names.index(room))
        elif room.isdigit() and int(room) < len(room_names):
            out.append(int(room))
        else:
            raise UserError(f"{path}: room {room!r} is not one of {', '.join(room_names)} (or an index)")
    return tuple(out)


# ---------------------------------------------------------------------------------------------------- splits


def _role(j: int) -> int:
    """The paper's per-category split rule: index into :data:`ROLES`."""
    return 2 if j % 10 == 9 else 1 if j % 10 == 8 else 0


def _take_in_turn(objects_by_category: Sequence[Sequence[int]], limit: int | None) -> list[list[int]]:
    """At most ``limit`` objects in all, the categories taken in turn (rank 0 of each, then rank 1, ...)."""
    if limit is None:
        return [list(objs) for objs in objects_by_category]
    kept: list[list[int]] = [[] for _ in objects_by_category]
    taken, rank = 0, 0
    while taken < limit and any(rank < len(objs) for objs in objects_by_category):
        for c, objs in enumerate(objects_by_category):
            if rank < len(objs) and taken < limit:
                kept[c].append(objs[rank])
                taken += 1
        rank += 1
    return kept


def _split(
    videos: Sequence[np.ndarray], obj: Sequence[int], cat: Sequence[int], category_room: Sequence[int], size: int
) -> TemporalSplit:
    lengths = [len(v) for v in videos] if videos else []
    frames = np.concatenate(videos) if videos else np.zeros((0, 3, size, size), dtype=np.uint8)
    rooms = np.asarray(category_room, dtype=np.int64)
    cat_rows = np.repeat(np.asarray(cat, dtype=np.int64), lengths)
    return TemporalSplit(
        frames=torch.from_numpy(frames),
        obj=torch.from_numpy(np.repeat(np.asarray(obj, dtype=np.int64), lengths)),
        labels=torch.from_numpy(cat_rows),
        room=torch.from_numpy(rooms[cat_rows] if len(cat_rows) else cat_rows),
        frame_index=torch.from_numpy(np.concatenate([np.arange(k) for k in lengths]).astype(np.int64))
        if lengths
        else torch.zeros(0, dtype=torch.int64),
    )
