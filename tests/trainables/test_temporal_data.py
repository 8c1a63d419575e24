"""trainables.tasks.temporal.data: the embedded object videos (sizes, determinism, the paper's split rule, room maps and
their random control, category / object / time structure in the pixels) and a tiny MVImgNet-style root (index
layouts, "Uncertain" categories dropped, frame order, clear errors)."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import write_png

from trainables.datasets import DatasetNotFoundError
from trainables.tasks.temporal.data import (
    TemporalData,
    TemporalSplit,
    check_temporal_dataset,
    load_temporal,
    random_room_map,
)
from trainables.tasks.temporal.synthetic import ROOM_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def default() -> TemporalData:
    return load_temporal("synthetic", seed=0)


def _splits(data: TemporalData) -> tuple[TemporalSplit, TemporalSplit, TemporalSplit]:
    return data.train, data.val, data.test


# ------------------------------------------------------------------------------------------------- synthetic


def test_default_sizes_and_types(default):
    assert default.name == "synthetic" and default.room_map == "balanced"
    assert (default.n_categories, default.n_rooms, default.image_size) == (8, 4, 32)
    assert default.room_names == ROOM_NAMES[:4] and len(set(default.category_names)) == 8
    for split, n_objects in zip(_splits(default), (8 * 8, 8, 8), strict=True):
        assert split.frames.dtype == torch.uint8 and split.frames.shape == (n_objects * 12, 3, 32, 32)
        for field in (split.obj, split.labels, split.room, split.frame_index):
            assert field.dtype == torch.int64 and field.shape == (len(split),)
        assert split.n_objects == n_objects
        assert torch.equal(split.frame_index, torch.arange(12).repeat(n_objects))
    assert torch.equal(default.object_lengths, torch.full((64,), 12))
    assert torch.equal(default.train.object_starts, torch.arange(64) * 12)
    x = default.train.frames.transpose(0, 1).reshape(3, -1).double() / 255
    assert default.frame_mean == pytest.approx(x.mean(1).tolist()) and default.frame_std == pytest.approx(
        x.std(1).tolist()
    )
    assert default.pretrain is default.train


def test_deterministic_in_the_seed_and_limit_takes_a_subset(default):
    again = load_temporal("synthetic", seed=0)
    other = load_temporal("synthetic", seed=1)
    for a, b, c in zip(_splits(default), _splits(again), _splits(other), strict=True):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.obj, b.obj)
        assert not torch.equal(a.frames, c.frames) and torch.equal(a.obj, c.obj)
    small = load_temporal("synthetic", seed=0, limit=3)
    for full, part in zip(_splits(default), _splits(small), strict=True):
        assert part.n_objects == 3 and part.labels.unique().tolist() == [0, 1, 2]  # categories in turn
        for o in part.object_ids.tolist():  # an object's pixels do not depend on what else is generated
            assert torch.equal(part.frames[part.obj == o], full.frames[full.obj == o])


def test_the_papers_split_rule_on_unseen_objects():
    data = load_temporal("synthetic", objects_per_category=20, n_categories=4, n_rooms=2, frames_per_object=3)
    j = [split.object_ids % 20 for split in _splits(data)]
    assert set(j[2].tolist()) == {9, 19} and set(j[1].tolist()) == {8, 18}
    assert set(j[0].tolist()) == set(range(20)) - {8, 9, 18, 19}
    ids = [set(split.object_ids.tolist()) for split in _splits(data)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for split in _splits(data):
        assert torch.equal(split.object_ids // 20, split.labels[split.object_starts])
        assert torch.bincount(split.labels[split.object_starts], minlength=4).unique().numel() == 1  # balanced


def test_rooms_follow_the_balanced_map(default):
    assert default.category_room == (0, 1, 2, 3, 0, 1, 2, 3)
    room_of = torch.tensor(default.category_room)
    for split in _splits(default):
        assert torch.equal(split.room, room_of[split.labels])


def test_random_room_map_is_balanced_differs_and_leaves_the_pixels(default):
    shuffled = load_temporal("synthetic", seed=0, room_map="random")
    assert sorted(shuffled.category_room) == sorted(default.category_room)  # the same room sizes

    def grouping(rooms):
        return {frozenset(c for c, r in enumerate(rooms) if r == room) for room in set(rooms)}

    assert grouping(shuffled.category_room) != grouping(default.category_room)
    assert torch.equal(shuffled.train.frames, default.train.frames)  # the map changes who shares a room, not pixels
    room_of = torch.tensor(shuffled.category_room)
    assert torch.equal(shuffled.test.room, room_of[shuffled.test.labels])
    for seed in range(20):
        assert grouping(random_room_map(default.category_room, seed)) != grouping(default.category_room)
    # "random:K" fixes the control map across data seeds, as the paper ships two fixed random files
    a = load_temporal("synthetic", seed=0, room_map="random:5", limit=1)
    b = load_temporal("synthetic", seed=3, room_map="random:5", limit=1)
    assert a.category_room == b.category_room == random_room_map(default.category_room, 5)


def test_room_map_from_json(tmp_path, default):
    names = default.category_names
    paper_form = tmp_path / "rooms.json"  # {room: [category, ...]}, categories by name or index
    paper_form.write_text(json.dumps({"Bathroom": [names[0], "1", 2, 3], "Kitchen": [names[4], 5, 6, 7]}))
    data = load_temporal("synthetic", room_map=str(paper_form), limit=1)
    assert data.category_room == (1, 1, 1, 1, 0, 0, 0, 0)
    flat = tmp_path / "flat.json"  # {category: room}, rooms by name or index
    flat.write_text(json.dumps({str(c): ("Bedroom" if c % 2 else 0) for c in range(8)}))
    assert load_temporal("synthetic", room_map=str(flat), limit=1).category_room == (0, 3) * 4
    flat.write_text(json.dumps({str(c): 0 for c in range(7)}))
    with pytest.raises(ValueError, match="07-star"):
        load_temporal("synthetic", room_map=str(flat), limit=1)
    with pytest.raises(DatasetNotFoundError, match="nope.json"):
        load_temporal("synthetic", room_map=str(tmp_path / "nope.json"), limit=1)


def test_time_object_and_category_are_visible_in_the_pixels(default):
    """Neighbouring frames are closer than other objects of the category, which are closer than other categories,
    so time, object and category are all learnable levels."""
    x = default.train.frames.float().flatten(1) / 255
    obj, cat = default.train.obj, default.train.labels
    step = (obj[1:] == obj[:-1]).nonzero().squeeze(1)
    consecutive = ((x[step] - x[step + 1]) ** 2).mean().item()
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(0, len(x), (6000,), generator=g), torch.randint(0, len(x), (6000,), generator=g)
    mse = ((x[i] - x[j]) ** 2).mean(1)
    same_category = mse[(cat[i] == cat[j]) & (obj[i] != obj[j])].mean().item()
    other_category = mse[cat[i] != cat[j]].mean().item()
    assert consecutive < 0.5 * same_category and same_category < 0.85 * other_category


def test_split_must_hold_whole_objects_in_order():
    frames = torch.zeros((4, 3, 8, 8), dtype=torch.uint8)
    zeros = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="contiguous"):
        TemporalSplit(frames, torch.tensor([0, 1, 0, 1]), zeros, zeros, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="frame_index"):
        TemporalSplit(frames, torch.tensor([0, 0, 1, 1]), zeros, zeros, torch.tensor([1, 0, 0, 1]))
    split = TemporalSplit(frames, torch.tensor([5, 5, 5, 2]), zeros, zeros, torch.tensor([0, 1, 2, 0]))
    assert split.object_lengths.tolist() == [3, 1] and split.object_ids.tolist() == [5, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "kinetics"}, "unknown temporal dataset"),
        ({"limit": 0}, "limit"),
        ({"objects_per_category": 9}, "objects_per_category"),
        ({"n_rooms": 9}, "n_rooms"),
        ({"frames_per_object": 1}, "frames_per_object"),
        ({"image_size": 4}, "image_size"),
        ({"context_json": "rooms.json"}, "context_json"),
        ({"room_map": "balancd"}, "room_map must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_temporal(**{"name": "synthetic", **kwargs})


# -------------------------------------------------------------------------------------------------- MVImgNet
#
# Categories 3, 5 and 17 are in rooms, 42 is "Uncertain" and 99 is missing from the JSON (both dropped). Each kept
# category has objects o00..o09 (3 frames each): by the paper's rule o08 is val and o09 is test. Every image is a
# solid colour that encodes (category, object, frame), so the test can tell which file ended up in which row.

KEPT = ("3", "5", "17")
ROOMS = {"Kitchen": [3, 17], "Office": [], "Garage": [5], "Uncertain": [42]}


def _colour(c: str, o: int, f: int) -> tuple[int, int, int]:
    return int(c) * 2 + 10, 20 * o + 5, 60 * f + 15


def _objects() -> list[tuple[str, int, int]]:
    """(category, object, frames)."""
    return [(c, o, 3) for c in KEPT for o in range(10)] + [("42", 0, 2), ("99", 0, 2)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvimgnet-images")
    for c, o, n in _objects():
        folder = root / c / f"o{o:02d}" / "images"
        folder.mkdir(parents=True)
        for f in range(n):
            pixel = torch.tensor(_colour(c, o, f), dtype=torch.uint8)
            write_png(pixel[:, None, None].expand(3, 12, 16).contiguous(), str(folder / f"{f:03d}.png"))
        (folder / "notes.txt").write_text("not an image")
    return root


def _rows(layout: str) -> dict[str, list]:
    cols: dict[str, list] = {"category": [], "object": [], "frame": [], "length": []}
    if layout in ("partition", "paper"):
        cols.update(partition=[], path=[])
    for c, o, n in _objects():
        for f in reversed(range(n)):  # rows out of order: the loader sorts by frame
            cols["category"].append(int(c))
            cols["object"].append(f"o{o:02d}")
            cols["frame"].append(f"{f:03d}.png" if layout == "names" else f)
            cols["length"].append(n)
            if "path" in cols:
                cols["path"].append(f"{c}/o{o:02d}/images/{f:03d}.png")
                # an explicit partition overrides the rule: here o00 is the test object and o09 trains
                cols["partition"].append("test" if o == 0 else "val" if o == 8 else "train")
    return cols


def _write_root(root, images, layout: str = "positions") -> str:
    """A root whose category folders link to the shared images, with the index in the given layout."""
    root.mkdir(exist_ok=True)
    for c in os.listdir(images):
        os.symlink(images / c, root / c)
    cols = _rows(layout)
    schema = pa.schema([("category", pa.int32())])
    table = pa.table(
        {k: pa.array(v, type=schema.field(k).type if k in schema.names else None) for k, v in cols.items()}
    )
    if layout == "paper":  # construct_mvi.py's three files, the split in the file name
        for role in ("train", "val", "test"):
            part = table.filter(pc.equal(table["partition"], role)).drop_columns(["partition"])
            pq.write_table(part, root / f"dataset_{role}_all3.parquet")
    else:
        pq.write_table(table, root / "index.parquet")
    (root / "room_assignment.json").write_text(json.dumps(ROOMS))
    return str(root)


@pytest.mark.parametrize("layout", ["positions", "names", "partition", "paper"])
def test_mvimgnet_layouts_load_with_the_right_splits(tmp_path, images, layout):
    root = _write_root(tmp_path / "root", images, layout)
    check_temporal_dataset("mvimgnet", root)
    data = load_temporal("mvimgnet", root, image_size=8)
    assert data.name == "mvimgnet" and data.image_size == 8
    assert data.category_names == KEPT  # numeric order; 42 (Uncertain) and 99 (not in the JSON) dropped
    assert data.room_names == ("Kitchen", "Garage")  # JSON order; Office holds no category
    assert data.category_room == (0, 1, 0) and (data.n_categories, data.n_rooms) == (3, 2)
    test_object = 0 if layout in ("partition", "paper") else 9
    expected = {"train": set(range(10)) - {8, test_object}, "val": {8}, "test": {test_object}}
    for role, split in zip(("train", "val", "test"), _splits(data), strict=True):
        assert torch.equal(split.room, torch.tensor(data.category_room)[split.labels])
        assert torch.equal(split.object_lengths, torch.full((3 * len(expected[role]),), 3))
        seen = set()
        for row in range(len(split)):
            r, g, b = split.frames[row, :, 4, 4].tolist()
            c, o, f = KEPT[int(split.labels[row])], (g - 5) // 20, int(split.frame_index[row])
            assert (r, g, b) == _colour(c, o, f)  # the file of this (category, object, frame)
            assert (split.frames[row] == split.frames[row, :, :1, :1]).all()
            seen.add(o)
        assert seen == expected[role]
    ids = [set(s.object_ids.tolist()) for s in _splits(data)]
    assert len(ids[0] | ids[1] | ids[2]) == 30


def test_mvimgnet_limit_and_random_rooms(tmp_path, images):
    root = _write_root(tmp_path / "root", images)
    data = load_temporal(
        "mvimgnet", root, limit=2, room_map="random", context_json=os.path.join(root, "room_assignment.json")
    )
    assert [s.n_objects for s in _splits(data)] == [2, 2, 2]
    assert data.train.labels[data.train.object_starts].tolist() == [0, 1]  # categories in turn
    assert sorted(data.category_room) == [0, 0, 1] and data.category_room != (0, 1, 0)
    with pytest.raises(ValueError, match="context_json"):
        load_temporal("mvimgnet", root, room_map=os.path.join(root, "room_assignment.json"))


def test_mvimgnet_missing_files_name_the_path(tmp_path, images):
    with pytest.raises(DatasetNotFoundError, match="needs a data root"):
        load_temporal("mvimgnet")
    absent = str(tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match=re.escape(absent)):
        check_temporal_dataset("mvimgnet", absent)
    root = _write_root(tmp_path / "root", images)
    os.remove(os.path.join(root, "room_assignment.json"))
    for fn in (check_temporal_dataset, load_temporal):
        with pytest.raises(DatasetNotFoundError, match=re.escape(os.path.join(root, "room_assignment.json"))):
            fn("mvimgnet", root)
    other = tmp_path / "rooms.json"
    other.write_text(json.dumps({"3": "Kitchen", "5": "Uncertain", "17": "Garage"}))  # {category: room} form
    assert load_temporal("mvimgnet", root, limit=1, context_json=str(other), image_size=8).category_names == ("3", "17")
    os.remove(os.path.join(root, "index.parquet"))
    with pytest.raises(DatasetNotFoundError, match=re.escape(os.path.join(root, "index.parquet"))):
        check_temporal_dataset("mvimgnet", root, str(other))

    broken = _write_root(tmp_path / "broken", images, "partition")
    table = pq.read_table(os.path.join(broken, "index.parquet"))
    paths = table["path"].to_pylist()
    paths[0] = "3/o05/images/missing.png"
    pq.write_table(
        table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths)),
        os.path.join(broken, "index.parquet"),
    )
    with pytest.raises(DatasetNotFoundError, match="missing.png"):
        load_temporal("mvimgnet", broken)
    os.unlink(os.path.join(broken, "5"))
    with pytest.raises(DatasetNotFoundError, match=re.escape(os.path.join(broken, "5", "o00"))):
        check_temporal_dataset("mvimgnet", broken)
