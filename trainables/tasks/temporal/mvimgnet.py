"""The ``mvimgnet`` reader: MVImgNet's object folders under a local root, listed by a parquet index (or the paper's
split files), with the room JSON, read as listed with one-line errors for what is missing.

Kept apart from :mod:`~trainables.tasks.temporal.data` so that the index formats, their checks and the decoding
live with the one source that needs them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch

from trainables.datasets import IMAGE_SUFFIXES, ROLES, DatasetNotFoundError, channel_stats, require_root
from trainables.errors import UserError
from trainables.tasks.temporal.data import (
    UNCERTAIN,
    TemporalData,
    _random_seed,
    _read_context_json,
    _role,
    _split,
    _take_in_turn,
    random_room_map,
)

INDEX_FILE = "index.parquet"
PAPER_INDEX_FILES = {role: f"dataset_{role}_all3.parquet" for role in ROLES}  # construct_mvi.py's output
DEFAULT_CONTEXT_JSON = "room_assignment.json"

_FALLBACK = "or use the embedded `dataset: synthetic`"
_NO_DOWNLOAD = "nothing is downloaded at run time"
_LAYOUT = f"{INDEX_FILE} (category, object, frame[, partition, path]) and <category>/<object>/images/*.jpg|png"


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
