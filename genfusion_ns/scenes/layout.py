"""Random scene layouts: an indoor room with textured walls and several objects, or an object-centric scene on a
ground plane under a textured dome. Everything is drawn from one seeded generator, so a seed fixes the scene."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .primitives import Box, Cylinder, Plane, Primitive, Sphere
from .textures import Material

PATTERNS = ("checker", "stripes", "noise", "marble")


@dataclass
class SceneLayout:
    primitives: list[Primitive]
    materials: list[Material]
    light_dir: np.ndarray  # unit vector towards the light
    target: np.ndarray  # point the cameras look at
    orbit_radius: float
    camera_height: float
    shadow_casters: list[int] = field(default_factory=list)  # primitive indices that cast shadows


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


def _add_material(materials: list[Material], material: Material) -> int:
    materials.append(material)
    return len(materials) - 1


def _random_objects(rng: np.random.Generator, materials: list[Material], count: int, spread: float,
                    ground_z: float, size_range: tuple[float, float]) -> list[Primitive]:
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
        mat = _add_material(materials, _random_material(rng, 100 + len(objects), (0.08, 0.25)))
        kind = rng.integers(3)
        if kind == 0:
            objects.append(Sphere(mat, np.array([xy[0], xy[1], ground_z + size]), float(size)))
        elif kind == 1:
            half = np.array([size, size * rng.uniform(0.6, 1.0), size * rng.uniform(0.7, 1.6)])
            objects.append(Box(mat, np.array([xy[0], xy[1], ground_z + half[2]]), half, float(rng.uniform(0, np.pi))))
        else:
            objects.append(Cylinder(mat, xy.copy(), float(size * 0.8), ground_z, ground_z + float(size * rng.uniform(1.5, 3.0))))
    return objects


def room_layout(rng: np.random.Generator) -> SceneLayout:
    """A closed room (floor, ceiling, four walls, each with its own texture) with 4-7 objects in the middle."""
    half_x, half_y, ceiling = rng.uniform(2.6, 3.4), rng.uniform(2.6, 3.4), rng.uniform(2.5, 3.0)
    materials: list[Material] = []
    floor = _add_material(materials, Material("checker", _random_color(rng, 0.1, 0.5), _random_color(rng, 0.5, 0.95),
                                              scale=float(rng.uniform(0.3, 0.5)), seed=1))
    ceiling_mat = _add_material(materials, Material("plain", _random_color(rng, 0.7, 0.95), _random_color(rng), 0.5, seed=2))
    walls = [_add_material(materials, _random_material(rng, 10 + i, (0.25, 0.6))) for i in range(4)]
    prims: list[Primitive] = [
        Plane(floor, np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        Plane(ceiling_mat, np.array([0.0, 0.0, ceiling]), np.array([0.0, 0.0, -1.0])),
        Plane(walls[0], np.array([half_x, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0])),
        Plane(walls[1], np.array([-half_x, 0.0, 0.0]), np.array([1.0, 0.0, 0.0])),
        Plane(walls[2], np.array([0.0, half_y, 0.0]), np.array([0.0, -1.0, 0.0])),
        Plane(walls[3], np.array([0.0, -half_y, 0.0]), np.array([0.0, 1.0, 0.0])),
    ]
    objects = _random_objects(rng, materials, int(rng.integers(4, 8)), spread=1.0, ground_z=0.0, size_range=(0.18, 0.4))
    first_object = len(prims)
    prims.extend(objects)
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    return SceneLayout(prims, materials, light / np.linalg.norm(light), target=np.array([0.0, 0.0, 0.45]),
                       orbit_radius=float(min(half_x, half_y) * 0.62), camera_height=1.35,
                       shadow_casters=list(range(first_object, len(prims))))


def object_layout(rng: np.random.Generator) -> SceneLayout:
    """An object-centric capture: a tight cluster of objects on a textured ground under a textured sky dome."""
    materials: list[Material] = []
    ground = _add_material(materials, _random_material(rng, 1, (0.35, 0.6)))
    dome = _add_material(materials, Material("noise", _random_color(rng, 0.4, 0.9), _random_color(rng, 0.2, 0.7),
                                             scale=float(rng.uniform(1.0, 2.0)), seed=2))
    prims: list[Primitive] = [
        Plane(ground, np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        Sphere(dome, np.array([0.0, 0.0, 0.0]), 9.0, inside=True),
    ]
    objects = _random_objects(rng, materials, int(rng.integers(3, 6)), spread=0.55, ground_z=0.0, size_range=(0.15, 0.32))
    first_object = len(prims)
    prims.extend(objects)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    return SceneLayout(prims, materials, light / np.linalg.norm(light), target=np.array([0.0, 0.0, 0.3]),
                       orbit_radius=2.4, camera_height=1.3, shadow_casters=list(range(first_object, len(prims))))


LAYOUTS = {"room": room_layout, "object": object_layout}
