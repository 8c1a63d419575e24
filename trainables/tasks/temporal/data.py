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

- ``synthetic`` (default, embedded): rendered object videos, see :func:`render_object`;
- ``mvimgnet``: a local MVImgNet root with a parquet index (layout in :func:`check_temporal_dataset`).

Nothing is downloaded: a missing dataset raises :class:`~trainables.datasets.DatasetNotFoundError` with a
one-line fix.

- [0] Aubret et al., 2024, Learning Object Semantic Similarity with Self-Supervision
  (github.com/neuroai-arena/ObjectSemanticSimilarity)
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from trainables.datasets import IMAGE_SUFFIXES, ROLES, DatasetNotFoundError, channel_stats, require_root
from trainables.errors import UserError

DATASETS: tuple[str, ...] = ("synthetic", "mvimgnet")
DEFAULT_IMAGE_SIZE = {"synthetic": 32, "mvimgnet": 64}
INDEX_FILE = "index.parquet"
PAPER_INDEX_FILES = {role: f"dataset_{role}_all3.parquet" for role in ROLES}  # construct_mvi.py's output
DEFAULT_CONTEXT_JSON = "room_assignment.json"
UNCERTAIN = "uncertain"  # the paper's room for categories it could not place; dropped, compared case-insensitively

_FALLBACK = "or use the embedded `dataset: synthetic`"
_NO_DOWNLOAD = "nothing is downloaded at run time"
_LAYOUT = f"{INDEX_FILE} (category, object, frame[, partition, path]) and <category>/<object>/images/*.jpg|png"
_JSON_FORMAT = "a JSON {room: [category, ...]} as the paper's utils/room_assignment_balanced.json, or {category: room}"


# ----------------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, eq=False)
class TemporalSplit:
    """One split, one row per frame; an object's frames are contiguous and in video order.

    Attributes:
        frames: RGB frames. Shape: (N, 3, H, W), uint8.
        obj: global object id (unique across splits). Shape: (N,), int64.
        category: category index into ``TemporalData.category_names``. Shape: (N,), int64.
        room: room index into ``TemporalData.room_names`` (the category's room under the map). Shape: (N,), int64.
        frame_index: position of the frame in its object's video, 0..length-1 (the rank among the frames kept, so
            that ``k + delta`` is always a valid neighbour inside the video). Shape: (N,), int64.
    """

    frames: torch.Tensor
    obj: torch.Tensor
    category: torch.Tensor
    room: torch.Tensor
    frame_index: torch.Tensor

    def __post_init__(self) -> None:
        n = int(self.frames.shape[0])
        if self.frames.dtype != torch.uint8 or self.frames.ndim != 4 or self.frames.shape[1] != 3:
            raise ValueError(f"frames must be uint8 (N, 3, H, W), got {self.frames.dtype} {tuple(self.frames.shape)}")
        for field in ("obj", "category", "room", "frame_index"):
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
        return _load_synthetic(
            seed, limit, room_map, n_categories, n_rooms, objects_per_category, frames_per_object, size
        )
    if _is_path(room_map):
        raise ValueError("for mvimgnet pass the room JSON as context_json; room_map is 'balanced' or 'random[:K]'")
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


# ------------------------------------------------------------------------------------------------- synthetic
#
# A category fixes a shape, a hue and a surface pattern; an object is one realisation: its own shade, proportions,
# size, pattern frequency/orientation/contrast and a small coloured mark at its own place on the surface (the
# object-level detail). Its video is a smooth viewpoint path: in-plane rotation, a yaw that foreshortens it, a
# breathing scale and a drift, all in object coordinates so the pattern and mark turn with it; consecutive frames
# therefore differ by a few degrees and a pixel or two. The background is the object's own grey with a chromatic
# jitter, a gentle gradient and per-frame noise, plus a faint tint of the room the category really lives in (the
# "balanced" room). That tint is weaker than the jitter, so context is learnable mainly from co-occurrence in time;
# the pixels never depend on `room_map` (the "random" control changes which objects share a room, not the frames).

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "hexagon", "star")
PATTERNS = ("plain", "stripes", "dots", "checker")
ROOM_NAMES = ("Kitchen", "Bathroom", "Living Room", "Bedroom", "Nursery", "Hallway", "Office", "Garage")
_ROOM_TINT = 0.04  # amplitude of the room's chromatic tint, [0, 1] units
_BG_JITTER = 0.035  # per-object chromatic jitter of the background: larger than the tint
_NOISE = 0.03  # per-frame pixel noise


class CategoryStyle(NamedTuple):
    """What a synthetic category fixes."""

    shape: str
    hue: float  # in [0, 1)
    pattern: str


def category_style(c: int, n_categories: int) -> CategoryStyle:
    """Shape and pattern cycle with different periods and hues are spread evenly, so categories differ in several."""
    return CategoryStyle(
        shape=SHAPES[c % len(SHAPES)], hue=c / n_categories, pattern=PATTERNS[(c + c // len(SHAPES)) % len(PATTERNS)]
    )


def _category_name(c: int, style: CategoryStyle) -> str:
    return f"{c:02d}-{style.shape}-{style.pattern}"


def _room_names(n_rooms: int) -> tuple[str, ...]:
    return tuple(ROOM_NAMES[r] if r < len(ROOM_NAMES) else f"Room {r}" for r in range(n_rooms))


def _shape_field(shape: str, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Signed distance-like field of a unit-sized shape (> 0 inside), in object units."""
    r = np.hypot(vx, vy)
    if shape == "disc":
        return 1.0 - r
    if shape == "square":
        return 0.85 - np.maximum(np.abs(vx), np.abs(vy))
    if shape == "diamond":
        return 1.15 - (np.abs(vx) + np.abs(vy))
    if shape == "ring":
        return np.minimum(1.0 - r, r - 0.55)
    if shape == "cross":
        arm = np.minimum(0.95 - np.abs(vx), 0.33 - np.abs(vy))
        return np.maximum(arm, np.minimum(0.33 - np.abs(vx), 0.95 - np.abs(vy)))
    if shape in ("triangle", "hexagon"):
        k = np.arange(3)[:, None, None, None]
        angles = (math.pi / 2 + 2 * math.pi * k / 3) if shape == "triangle" else (math.pi * k / 3)
        proj = vx[None] * np.cos(angles) + vy[None] * np.sin(angles)
        return 0.55 - proj.max(axis=0) if shape == "triangle" else 0.9 - np.abs(proj).max(axis=0)
    # star: five lobes
    return 0.62 + 0.33 * np.cos(5 * np.arctan2(vy, vx)) - r


def _pattern(kind: str, u: np.ndarray, w: np.ndarray, freq: float) -> np.ndarray:
    """Where the secondary colour shows (in [0, 1]), in pattern coordinates (u, w)."""
    if kind == "plain":
        return np.zeros_like(u)
    if kind == "stripes":
        return (np.sin(2 * np.pi * freq * u) > 0).astype(np.float64)
    if kind == "checker":
        return ((np.sin(2 * np.pi * freq * u) * np.sin(2 * np.pi * freq * w)) > 0).astype(np.float64)
    cell_u, cell_w = freq * u - np.round(freq * u), freq * w - np.round(freq * w)  # dots
    return (np.hypot(cell_u, cell_w) < 0.28).astype(np.float64)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def render_object(
    style: CategoryStyle, room_hue: float, n_frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """The video of one object of category ``style``: frames ``(F, 3, size, size)`` uint8.

    ``room_hue`` sets the faint background tint of the object's (true) room.
    """
    # what the object is
    colour = _hsv(style.hue + rng.uniform(-0.03, 0.03), rng.uniform(0.55, 0.9), rng.uniform(0.65, 1.0))
    second = colour * rng.uniform(0.35, 0.65) if rng.uniform() < 0.5 else colour + (1 - colour) * rng.uniform(0.4, 0.7)
    aspect = np.exp(rng.uniform(-0.25, 0.25))  # width / height
    base_scale = rng.uniform(0.48, 0.62)  # half-size, in units of half the image
    freq, orient = rng.uniform(1.4, 2.6), rng.uniform(0, math.pi)
    mark_at = rng.uniform(0.0, 0.45) * np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])
    mark_colour = _hsv(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
    # how it is filmed: smooth viewpoint paths over the video
    t = np.arange(n_frames, dtype=np.float64)
    spin = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.25)  # rad per frame
    theta = rng.uniform(0, 2 * math.pi) + spin * t
    yaw = rng.uniform(0, 2 * math.pi) + rng.uniform(0.1, 0.25) * t
    scale = base_scale * (1 + 0.1 * np.sin(rng.uniform(0, 2 * math.pi) + rng.uniform(0.1, 0.3) * t))
    drift = rng.uniform(-0.12, 0.12, size=2)[:, None] + rng.uniform(-0.02, 0.02, size=2)[:, None] * (t - t.mean())
    # where it is: the background
    grey = rng.uniform(0.25, 0.55)
    tint = _ROOM_TINT * (_hsv(room_hue, 1.0, 1.0) - 0.5) * 2
    background = grey + tint + rng.normal(0.0, _BG_JITTER, size=3)
    gradient = rng.uniform(0.0, 0.08) * np.array([math.cos(b := rng.uniform(0, 2 * math.pi)), math.sin(b)])

    grid = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    gx, gy = grid[None, None, :], grid[None, :, None]  # (1, 1, W), (1, H, 1)
    dx, dy = gx - drift[0][:, None, None], gy - drift[1][:, None, None]  # (F, H, W)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    sc = scale[:, None, None]
    ox, oy = (cos * dx + sin * dy) / sc, (-sin * dx + cos * dy) / sc  # object coordinates
    squash = (0.55 + 0.45 * np.abs(np.cos(yaw)))[:, None, None]  # yaw foreshortens the width
    vx, vy = ox / (aspect * squash), oy * aspect
    edge_px = _shape_field(style.shape, vx, vy) * sc * size / 2
    mask = np.clip(edge_px + 0.5, 0.0, 1.0)[:, None]  # (F, 1, H, W), anti-aliased over one pixel
    u = vx * math.cos(orient) + vy * math.sin(orient)
    w = -vx * math.sin(orient) + vy * math.cos(orient)
    pat = _pattern(style.pattern, u, w, freq)[:, None]
    mark = (np.hypot(vx - mark_at[0], vy - mark_at[1]) < 0.24).astype(np.float64)[:, None]
    surface = colour[None, :, None, None] * (1 - pat) + second[None, :, None, None] * pat
    surface = surface * (1 - mark) + mark_colour[None, :, None, None] * mark
    shade = background[:, None, None] + gradient[0] * grid[None, None, :] + gradient[1] * grid[None, :, None]
    img = shade[None] * (1 - mask) + surface * mask
    img = img + rng.normal(0.0, _NOISE, size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


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


def _load_synthetic(
    seed: int,
    limit: int | None,
    room_map: str,
    n_categories: int,
    n_rooms: int,
    objects_per_category: int,
    frames_per_object: int,
    size: int,
) -> TemporalData:
    if n_categories < 2 or not 2 <= n_rooms <= n_categories:
        raise ValueError(f"need n_categories >= 2 and 2 <= n_rooms <= n_categories, got {n_categories}, {n_rooms}")
    if objects_per_category < 10:
        raise ValueError(
            f"objects_per_category must be >= 10 (one val and one test object each), got {objects_per_category}"
        )
    if frames_per_object < 2:
        raise ValueError(f"frames_per_object must be >= 2, got {frames_per_object}")
    styles = [category_style(c, n_categories) for c in range(n_categories)]
    category_names = tuple(_category_name(c, s) for c, s in enumerate(styles))
    room_names = _room_names(n_rooms)
    true_room = tuple(c % n_rooms for c in range(n_categories))  # hues c/n and c/n + 1/2 share a room: no hue cue
    if room_map == "balanced":
        category_room = true_room
    elif not _is_path(room_map):
        category_room = random_room_map(true_room, _random_seed(room_map, seed))
    else:
        category_room = _synthetic_room_map(room_map, category_names, room_names)
    room_hue = [(r / n_rooms + 0.08) % 1.0 for r in range(n_rooms)]

    splits = []
    for s in range(len(ROLES)):
        by_category = [[j for j in range(objects_per_category) if _role(j) == s] for _ in range(n_categories)]
        kept = _take_in_turn(by_category, limit)
        frames, obj, cat = [], [], []
        for c in range(n_categories):
            for j in kept[c]:
                rng = np.random.default_rng([seed, 7, c, j])  # object (c, j) depends on nothing else: limit-stable
                frames.append(render_object(styles[c], room_hue[true_room[c]], frames_per_object, size, rng))
                obj.append(c * objects_per_category + j)
                cat.append(c)
        splits.append(_split(frames, obj, cat, category_room, size))
    mean, std = channel_stats(splits[0].frames)
    return TemporalData(
        "synthetic", *splits, category_room, n_rooms, n_categories, room_names, category_names, mean, std, room_map
    )


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
        category=torch.from_numpy(cat_rows),
        room=torch.from_numpy(rooms[cat_rows] if len(cat_rows) else cat_rows),
        frame_index=torch.from_numpy(np.concatenate([np.arange(k) for k in lengths]).astype(np.int64))
        if lengths
        else torch.zeros(0, dtype=torch.int64),
    )




# -------------------------------------------------------------------------------------------------- MVImgNet


class _Rows(NamedTuple):
    """The index as columns, one entry per frame; ``frame`` holds ints or file names, ``path`` None when absent."""

    category: np.ndarray  # str
    object: np.ndarray  # str
    frame: np.ndarray
    role: np.ndarray  # int index into ROLES
    path: np.ndarray | None
    source: str  # the file(s) read, for messages


def _require_root(data_root: str | None) -> str:
    return require_root(data_root, "mvimgnet", _LAYOUT, _NO_DOWNLOAD, _FALLBACK)


def _context_path(root: str, context_json: str | None) -> str:
    return (
        os.path.expanduser(str(context_json)) if context_json is not None else os.path.join(root, DEFAULT_CONTEXT_JSON)
    )


def _read_index(root: str) -> _Rows:
    index = os.path.join(root, INDEX_FILE)
    paper = [os.path.join(root, PAPER_INDEX_FILES[r]) for r in ROLES]
    if os.path.isfile(index):
        return _read_parquet(index, None)
    if all(os.path.isfile(p) for p in paper):
        parts = [_read_parquet(p, s) for s, p in enumerate(paper)]
        if any(p.path is None for p in parts):
            raise UserError(f"the paper's split files under {root} must have a path column; regenerate them with "
                            "scripts/construct_mvi.py, or write an index.parquet")
        return _Rows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("category", "object", "frame", "role", "path")),
            source=", ".join(paper),
        )
    raise DatasetNotFoundError(
        f"mvimgnet index not found: {index} is missing (one row per frame: category, object, frame[, partition, "
        f"path]; or the paper's {', '.join(PAPER_INDEX_FILES.values())}), {_FALLBACK}"
    )


def _read_parquet(path: str, role: int | None) -> _Rows:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path} is not a readable parquet file ({str(err).splitlines()[0]}); rewrite it with "
                        "pandas.DataFrame.to_parquet or pyarrow") from err
    missing = [c for c in ("category", "object", "frame") if c not in names]
    if missing:
        raise UserError(f"{path} must have the columns category, object, frame; missing {', '.join(missing)}")
    wanted = ["category", "object", "frame"] + [c for c in ("partition", "path") if c in names]
    table = pq.read_table(path, columns=wanted)
    if any(table.column(c).null_count for c in wanted):
        raise UserError(
            f"{path} has empty (null) cells in {', '.join(c for c in wanted if table.column(c).null_count)}"
        )

    def strings(col: str) -> np.ndarray:
        return np.asarray(pc.cast(table.column(col), pa.string()).to_pylist(), dtype=object)

    frame_col = table.column("frame")
    if pa.types.is_integer(frame_col.type):
        frame = frame_col.to_numpy().astype(np.int64)
    elif pa.types.is_string(frame_col.type) or pa.types.is_large_string(frame_col.type):
        frame = strings("frame")
    else:
        raise UserError(f"{path}: frame must be integers (positions) or strings (file names), got {frame_col.type}")
    if role is not None:
        roles = np.full(len(table), role, dtype=np.int64)
    elif "partition" in names:
        part = strings("partition")
        bad = sorted(set(part.tolist()) - set(ROLES))
        if bad:
            raise UserError(f"{path}: partition {bad[0]!r} is not one of {', '.join(ROLES)}")
        roles = np.array([ROLES.index(p) for p in part], dtype=np.int64)
    else:
        roles = None
    category, obj = strings("category"), strings("object")
    if roles is None:
        roles = _paper_roles(category, obj)
    return _Rows(category, obj, frame, roles, strings("path") if "path" in names else None, path)


def _paper_roles(category: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """The paper's rule with j = the object's rank within its category, objects in sorted order of their ids."""
    keys = list(zip(category.tolist(), obj.tolist(), strict=True))
    by_category: dict[str, set[str]] = {}
    for c, o in keys:
        by_category.setdefault(c, set()).add(o)
    role = {(c, o): _role(j) for c, objs in by_category.items() for j, o in enumerate(sorted(objs))}
    return np.array([role[k] for k in keys], dtype=np.int64)


def _natural(name: str) -> tuple[int, int, str]:
    """MVImgNet's class labels are numbers: sort "2" before "10"."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _keep_assigned(rows: _Rows, assignment: dict[str, str], json_path: str) -> _Rows:
    """Drop the frames of categories the JSON puts in "Uncertain" or leaves out, as the paper does."""
    keep = np.array([assignment.get(c, UNCERTAIN).lower() != UNCERTAIN for c in rows.category], dtype=bool)
    if not keep.any():
        raise UserError(f"no category of {rows.source} is assigned to a room (other than Uncertain) by {json_path}; "
                        "check that the JSON names the index's categories as they are spelt there")
    rows = _Rows(*(None if a is None else a[keep] for a in rows[:5]), source=rows.source)
    for s, role in enumerate(ROLES):
        if not (rows.role == s).any():
            raise UserError(f"{rows.source} lists no {role} frame of an assigned category; every split needs one")
    return rows


def _object_order(rows: _Rows, category_index: dict[str, int], limit: int | None) -> list[list[tuple[str, str]]]:
    """Per split, the (category, object) keys kept, sorted by category index then object id."""
    out = []
    for s in range(len(ROLES)):
        sel = rows.role == s
        keys = sorted(
            set(zip(rows.category[sel].tolist(), rows.object[sel].tolist(), strict=True)),
            key=lambda k: (category_index[k[0]], k[1]),
        )
        by_category: list[list[tuple[str, str]]] = [[] for _ in category_index]
        for k in keys:
            by_category[category_index[k[0]]].append(k)
        out.append([k for part in _take_in_turn(by_category, limit) for k in part])
    return out


def _image_paths(root: str, rows: _Rows, check_only: bool = False) -> dict[tuple[str, str], list[str]]:
    """The image files of every object, in frame order. With ``check_only`` only folders / first files are checked."""
    order: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(rows.category.tolist(), rows.object.tolist(), strict=True)):
        order.setdefault(key, []).append(i)
    out: dict[tuple[str, str], list[str]] = {}
    for key, idx in order.items():
        if len({int(rows.role[i]) for i in idx}) > 1:
            raise UserError(f"{rows.source}: object {key[1]} of category {key[0]} is in more than one partition")
        idx = sorted(idx, key=lambda i: rows.frame[i])
        frames = [rows.frame[i] for i in idx]
        if len(set(frames)) != len(frames):
            raise UserError(f"{rows.source}: object {key[1]} of category {key[0]} lists a frame twice")
        if rows.path is not None:
            paths = [os.path.join(root, str(rows.path[i])) for i in idx]
            for p in paths[:1] if check_only else paths:
                if not os.path.isfile(p):
                    raise DatasetNotFoundError(f"mvimgnet frame not found: {p} is missing (named by {rows.source})")
        else:
            folder = os.path.join(root, key[0], key[1], "images")
            if not os.path.isdir(folder):
                raise DatasetNotFoundError(
                    f"mvimgnet frames not found: {folder}/ is missing (the images of object {key[1]} of category "
                    f"{key[0]}, listed in {rows.source})"
                )
            listing = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
            if isinstance(frames[0], str):
                absent = [f for f in frames if f not in set(listing)]
                if absent:
                    raise DatasetNotFoundError(
                        f"mvimgnet frame not found: {os.path.join(folder, absent[0])} is missing"
                    )
                paths = [os.path.join(folder, f) for f in frames]
            else:
                if frames[0] < 0 or frames[-1] >= len(listing):
                    raise DatasetNotFoundError(
                        f"mvimgnet frames missing: {folder}/ holds {len(listing)} images but {rows.source} lists frame "
                        f"{frames[-1] if frames[-1] >= len(listing) else frames[0]} (0-based positions in sorted order)"
                    )
                paths = [os.path.join(folder, listing[f]) for f in frames]
        out[key] = paths
    return out


def _read_frame(path: str, size: int) -> torch.Tensor:
    """Decode as RGB, resize the shorter side to ``size`` and centre-crop a square (aspect kept, as the paper's
    evaluation centre-crops)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    try:
        img = decode_image(path, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise UserError(f"cannot decode {path}: {str(err).splitlines()[0] if str(err) else 'not an image'}; "
                        "replace it with a readable .jpg/.png image") from err
    img = TF.resize(img, size, antialias=True)
    return TF.center_crop(img, [size, size]).contiguous()


def _load_mvimgnet(
    root: str, context_json: str | None, seed: int, limit: int | None, room_map: str, size: int
) -> TemporalData:
    rows = _read_index(root)
    json_path = _context_path(root, context_json)
    assignment = _read_context_json(json_path)
    rows = _keep_assigned(rows, assignment, json_path)
    categories = sorted(set(rows.category.tolist()), key=_natural)
    category_index = {c: i for i, c in enumerate(categories)}
    # rooms in the JSON's order (the paper numbers contexts so), only those holding a kept category
    used = {assignment[c] for c in categories}
    room_names = tuple(r for r in dict.fromkeys(assignment.values()) if r in used)
    as_given = tuple(room_names.index(assignment[c]) for c in categories)
    category_room = as_given if room_map == "balanced" else random_room_map(as_given, _random_seed(room_map, seed))

    kept = _object_order(rows, category_index, limit)
    wanted = {k for part in kept for k in part}
    sel = np.array([k in wanted for k in zip(rows.category.tolist(), rows.object.tolist(), strict=True)], dtype=bool)
    paths = _image_paths(root, _Rows(*(None if a is None else a[sel] for a in rows[:5]), source=rows.source))
    global_id = {k: i for i, k in enumerate(sorted(wanted, key=lambda k: (category_index[k[0]], k[1])))}
    splits = []
    for part in kept:
        videos = [torch.stack([_read_frame(p, size) for p in paths[k]]).numpy() for k in part]
        splits.append(
            _split(videos, [global_id[k] for k in part], [category_index[k[0]] for k in part], category_room, size)
        )
    mean, std = channel_stats(splits[0].frames)
    return TemporalData(
        "mvimgnet",
        *splits,
        category_room,
        len(room_names),
        len(categories),
        room_names,
        tuple(categories),
        mean,
        std,
        room_map,
    )
