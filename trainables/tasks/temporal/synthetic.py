"""The embedded ``synthetic`` world: rendered object videos of categories that live in rooms, generated from the
seed so that the task runs with no file.

Kept apart from :mod:`~trainables.tasks.temporal.data` because the renderer is the bulk of the data code yet
concerns only this source.
"""

from __future__ import annotations

import colorsys
import math
from typing import NamedTuple

import numpy as np

from trainables.datasets import ROLES, channel_stats
from trainables.tasks.temporal.data import (
    TemporalData,
    _is_path,
    _random_seed,
    _role,
    _split,
    _synthetic_room_map,
    _take_in_turn,
    random_room_map,
)

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
