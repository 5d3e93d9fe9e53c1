"""Random scene layouts: an indoor room with textured walls and several objects, an object-centric scene on a
ground plane under a textured dome, or a street between building blocks for walking captures. Surfaces carry
procedural patterns or tiled photos (``textures``). Everything is drawn from one seeded generator, so a seed (and
the texture style) fixes the scene."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .photos import GROUND_PHOTOS, WALL_PHOTOS, photo_crop
from .primitives import Box, Cylinder, Plane, Primitive, Sphere
from .textures import Material

PATTERNS = ("checker", "stripes", "noise", "marble")
TextureStyle = Literal["procedural", "photo"]
PHOTO_SCALE_PER_FEATURE = 6.0
"""Photo textures: metres per photo width = this × the procedural feature size the surface would get (a photo
holds many features: bricks, stones)."""


@dataclass
class SceneLayout:
    primitives: list[Primitive]
    materials: list[Material]
    light_dir: np.ndarray  # unit vector towards the light
    target: np.ndarray  # point the cameras look at
    orbit_radius: float
    camera_height: float
    shadow_casters: list[int] = field(default_factory=list)  # primitive indices that cast shadows
    walk_direction: np.ndarray | None = None  # streets: the direction a walking capture moves along (the walk
    # goes orbit_radius either side of target)


def _random_color(rng: np.random.Generator, low: float = 0.15, high: float = 0.95) -> np.ndarray:
    return rng.uniform(low, high, size=3)


def _random_material(rng: np.random.Generator, seed: int, scale_range: tuple[float, float]) -> Material:
    direction = rng.normal(size=3)
    return Material(
        pattern=str(rng.choice(PATTERNS)),
        color_a=_random_color(rng),
        color_b=_random_color(rng),
        scale=float(rng.uniform(*scale_range)),
        direction=direction / np.linalg.norm(direction),
        seed=seed,
    )


def _surface_material(rng: np.random.Generator, seed: int, scale_range: tuple[float, float], textures: TextureStyle,
                      photos: tuple[str, ...] = WALL_PHOTOS) -> Material:
    """A procedural material, or (``textures="photo"``) a tinted crop of one of ``photos`` at a matching scale."""
    if textures == "procedural":
        return _random_material(rng, seed, scale_range)
    scale = PHOTO_SCALE_PER_FEATURE * float(rng.uniform(*scale_range))
    return Material("photo", np.zeros(3), np.zeros(3), scale=scale, seed=seed, photo=photo_crop(rng, photos))


def _add_material(materials: list[Material], material: Material) -> int:
    materials.append(material)
    return len(materials) - 1


def _random_objects(rng: np.random.Generator, materials: list[Material], count: int, spread: float,
                    ground_z: float, size_range: tuple[float, float],
                    textures: TextureStyle = "procedural") -> list[Primitive]:
    """Spheres, rotated boxes and cylinders resting on the ground, placed without heavy overlap."""
    objects: list[Primitive] = []
    placed: list[tuple[np.ndarray, float]] = []
    attempts = 0
    while len(objects) < count and attempts < 200:
        attempts += 1
        size = rng.uniform(*size_range)
        xy = rng.uniform(-spread, spread, size=2)
        if any(np.linalg.norm(xy - p) < size + r + 0.05 for p, r in placed):
            continue
        placed.append((xy, size))
        mat = _add_material(materials, _surface_material(rng, 100 + len(objects), (0.08, 0.25), textures))
        objects.append(_object_at(rng, mat, xy, float(size), ground_z))
    return objects


def _object_at(rng: np.random.Generator, mat: int, xy: np.ndarray, size: float, ground_z: float) -> Primitive:
    """A sphere, a rotated box or a cylinder of about ``size`` standing on the ground at ``xy``."""
    kind = rng.integers(3)
    if kind == 0:
        return Sphere(mat, np.array([xy[0], xy[1], ground_z + size]), float(size))
    if kind == 1:
        half = np.array([size, size * rng.uniform(0.6, 1.0), size * rng.uniform(0.7, 1.6)])
        return Box(mat, np.array([xy[0], xy[1], ground_z + half[2]]), half, float(rng.uniform(0, np.pi)))
    return Cylinder(mat, xy.copy(), float(size * 0.8), ground_z, ground_z + float(size * rng.uniform(1.5, 3.0)))


def _ground_material(rng: np.random.Generator, textures: TextureStyle, procedural: Material,
                     scale_range: tuple[float, float]) -> Material:
    """``procedural`` (already drawn, so procedural scenes keep their draw order), or a ground photo."""
    if textures == "procedural":
        return procedural
    return _surface_material(rng, procedural.seed, scale_range, textures, photos=GROUND_PHOTOS)


def room_layout(rng: np.random.Generator, textures: TextureStyle = "procedural") -> SceneLayout:
    """A closed room (floor, ceiling, four walls, each with its own texture) with 4-7 objects in the middle."""
    half_x, half_y, ceiling = rng.uniform(2.6, 3.4), rng.uniform(2.6, 3.4), rng.uniform(2.5, 3.0)
    materials: list[Material] = []
    checker = Material("checker", _random_color(rng, 0.1, 0.5), _random_color(rng, 0.5, 0.95),
                       scale=float(rng.uniform(0.3, 0.5)), seed=1)
    floor = _add_material(materials, _ground_material(rng, textures, checker, (0.3, 0.5)))
    ceiling_mat = _add_material(materials, Material("plain", _random_color(rng, 0.7, 0.95), _random_color(rng), 0.5, seed=2))
    walls = [_add_material(materials, _surface_material(rng, 10 + i, (0.25, 0.6), textures)) for i in range(4)]
    prims: list[Primitive] = [
        Plane(floor, np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        Plane(ceiling_mat, np.array([0.0, 0.0, ceiling]), np.array([0.0, 0.0, -1.0])),
        Plane(walls[0], np.array([half_x, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0])),
        Plane(walls[1], np.array([-half_x, 0.0, 0.0]), np.array([1.0, 0.0, 0.0])),
        Plane(walls[2], np.array([0.0, half_y, 0.0]), np.array([0.0, -1.0, 0.0])),
        Plane(walls[3], np.array([0.0, -half_y, 0.0]), np.array([0.0, 1.0, 0.0])),
    ]
    objects = _random_objects(rng, materials, int(rng.integers(4, 8)), spread=1.0, ground_z=0.0,
                              size_range=(0.18, 0.4), textures=textures)
    first_object = len(prims)
    prims.extend(objects)
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    return SceneLayout(prims, materials, light / np.linalg.norm(light), target=np.array([0.0, 0.0, 0.45]),
                       orbit_radius=float(min(half_x, half_y) * 0.62), camera_height=1.35,
                       shadow_casters=list(range(first_object, len(prims))))


def object_layout(rng: np.random.Generator, textures: TextureStyle = "procedural") -> SceneLayout:
    """An object-centric capture: a tight cluster of objects on a textured ground under a textured sky dome."""
    materials: list[Material] = []
    ground = _add_material(materials, _ground_material(rng, textures, _random_material(rng, 1, (0.35, 0.6)),
                                                       (0.35, 0.6)))
    dome = _add_material(materials, Material("noise", _random_color(rng, 0.4, 0.9), _random_color(rng, 0.2, 0.7),
                                             scale=float(rng.uniform(1.0, 2.0)), seed=2))
    prims: list[Primitive] = [
        Plane(ground, np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        Sphere(dome, np.array([0.0, 0.0, 0.0]), 9.0, inside=True),
    ]
    objects = _random_objects(rng, materials, int(rng.integers(3, 6)), spread=0.55, ground_z=0.0,
                              size_range=(0.15, 0.32), textures=textures)
    first_object = len(prims)
    prims.extend(objects)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    return SceneLayout(prims, materials, light / np.linalg.norm(light), target=np.array([0.0, 0.0, 0.3]),
                       orbit_radius=2.4, camera_height=1.3, shadow_casters=list(range(first_object, len(prims))))


STREET_HALF_LENGTH = 8.0
"""Half the length of a street (metres along x); a walking capture covers its middle third."""


def _sky_material(rng: np.random.Generator) -> Material:
    """A bright, slightly cloudy sky (unlit): pale blue to white noise."""
    blue = np.array([0.55, 0.7, 0.95]) * rng.uniform(0.85, 1.05)
    white = np.array([0.92, 0.93, 0.95]) * rng.uniform(0.9, 1.05)
    return Material("noise", np.clip(blue, 0, 1), np.clip(white, 0, 1), scale=float(rng.uniform(4.0, 8.0)), seed=3,
                    emissive=True)


def _street_side(rng: np.random.Generator, materials: list[Material], side: float, half_width: float,
                 textures: TextureStyle) -> list[Primitive]:
    """Building blocks of random widths and heights lining one side of the street (``side`` = ±1 in y)."""
    blocks: list[Primitive] = []
    x = -STREET_HALF_LENGTH - 2.0
    while x < STREET_HALF_LENGTH + 2.0:
        width, height, depth = rng.uniform(2.5, 5.0), rng.uniform(3.0, 8.0), rng.uniform(2.0, 4.0)
        setback = rng.uniform(0.0, 0.4)
        mat = _add_material(materials, _surface_material(rng, 200 + len(materials), (0.3, 0.7), textures))
        center = np.array([x + width / 2, side * (half_width + setback + depth / 2), height / 2])
        blocks.append(Box(mat, center, np.array([width / 2, depth / 2, height / 2]), 0.0))
        x += width + rng.uniform(0.0, 0.6)
    return blocks


def street_layout(rng: np.random.Generator, textures: TextureStyle = "procedural") -> SceneLayout:
    """A street between rows of building blocks under a sky, with poles, bins and boulders along its edges: the
    forward-walking, narrow-view captures phones make outdoors. Cameras walk along x (``walk_direction``)."""
    half_width = rng.uniform(2.0, 3.2)
    materials: list[Material] = []
    ground = _add_material(materials, _ground_material(rng, textures, _random_material(rng, 1, (0.2, 0.4)), (0.2, 0.4)))
    sky = _add_material(materials, _sky_material(rng))
    prims: list[Primitive] = [
        Plane(ground, np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        Sphere(sky, np.array([0.0, 0.0, 0.0]), 40.0, inside=True),
    ]
    first_caster = len(prims)
    for side in (-1.0, 1.0):
        prims.extend(_street_side(rng, materials, side, half_width, textures))
    for _ in range(int(rng.integers(4, 9))):
        side = rng.choice((-1.0, 1.0))
        xy = np.array([rng.uniform(-STREET_HALF_LENGTH, STREET_HALF_LENGTH),
                       side * (half_width - rng.uniform(0.3, 0.9))])
        mat = _add_material(materials, _surface_material(rng, 100 + len(materials), (0.08, 0.25), textures))
        prims.append(_object_at(rng, mat, xy, float(rng.uniform(0.15, 0.4)), 0.0))
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    return SceneLayout(prims, materials, light / np.linalg.norm(light), target=np.array([0.0, 0.0, 1.2]),
                       orbit_radius=STREET_HALF_LENGTH / 3.0, camera_height=float(rng.uniform(1.4, 1.7)),
                       shadow_casters=list(range(first_caster, len(prims))), walk_direction=np.array([1.0, 0.0, 0.0]))


LAYOUTS = {"room": room_layout, "object": object_layout, "street": street_layout}
