"""Procedural multi-view scenes with ground truth (colour, metric depth, seed points), written as nerfstudio
datasets. They are the embedded default data of the demo, the tests and the benchmarks: no public dataset can be
downloaded where this project must run."""

from .config import SceneConfig, SceneConfigError
from .generate import SceneSummary, generate_scene, render_scene_views

__all__ = ["SceneConfig", "SceneConfigError", "SceneSummary", "generate_scene", "render_scene_views"]
