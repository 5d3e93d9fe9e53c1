"""Show repaired training views in nerfstudio's live web viewer.

nerfstudio's viewer draws its camera frustums once, at start-up, from the train dataset, so repaired views
that a fusion round adds at run time would only show up after reloading the run. :func:`show_repaired_views`
draws them right away, one frustum (with a thumbnail of the repaired image) per view, under their own
scene-tree node ``/genfusion_repaired/round_XX/view_XXXX`` and in a distinct colour, so they can be told apart
from the real cameras; :func:`remove_repaired_views` takes them away again when a round replaces the previous
one.

Both are best-effort: with no viewer (``--vis tensorboard``/``wandb``, the legacy viewer, ``ns-eval``) they do
nothing, and an error from viser is reported once as a warning, never raised into training.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from genfusion_ns.fusion.views import RepairedViews

SCENE_NODE = "/genfusion_repaired"
"""Parent scene-tree node of every repaired-view frustum."""
FRUSTUM_COLOR = (255, 140, 0)
"""Orange, next to the viewer's near-black training-camera frustums."""
THUMBNAIL_SIZE = 100
"""Longest side, in pixels, of the image drawn on a frustum (nerfstudio's own thumbnails are ~100 px)."""

# OpenGL (nerfstudio: +X right, +Y up, looking down -Z) to OpenCV (viser: +X right, +Y down, looking down +Z):
# negate the camera's Y and Z axes, i.e. a half turn about its X axis.
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def frustum_name(round_index: int, view_index: int) -> str:
    return f"{SCENE_NODE}/round_{round_index:02d}/view_{view_index:04d}"


def _scene_of(viewer: Any) -> Optional[Any]:
    """The viser scene API of nerfstudio's viewer, or None when there is no (new-style) viewer."""
    server = getattr(viewer, "viser_server", None) if viewer is not None else None
    return getattr(server, "scene", None) if server is not None else None


def _thumbnail(rgb: np.ndarray, max_side: int = THUMBNAIL_SIZE) -> np.ndarray:
    """``rgb`` (uint8 HWC) shrunk, keeping its aspect, so its longer side is at most ``max_side``."""
    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)  # never enlarges
    return np.asarray(image, dtype=np.uint8)


def _viser_pose(camera_to_world: np.ndarray):
    """``(wxyz, position)`` of a nerfstudio camera-to-world ``[3,4]`` in viser's frame and units."""
    import viser.transforms as vtf
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

    rotation = camera_to_world[:3, :3].astype(np.float64) @ _OPENGL_TO_OPENCV
    wxyz = vtf.SO3.from_matrix(rotation).wxyz
    position = camera_to_world[:3, 3].astype(np.float64) * VISER_NERFSTUDIO_SCALE_RATIO
    return wxyz, position


def _move_client_camera_on_click(handle: Any) -> None:
    """Clicking a frustum puts the clicking browser's camera on it, like the viewer's own training cameras."""
    on_click = getattr(handle, "on_click", None)
    if on_click is None:
        return

    def jump_to_frustum(event: Any) -> None:
        with event.client.atomic():
            event.client.camera.position = event.target.position
            event.client.camera.wxyz = event.target.wxyz

    on_click(jump_to_frustum)


def show_repaired_views(viewer: Any, views: RepairedViews, round_index: Optional[int] = None) -> List[Any]:
    """Draw one frustum per repaired view in nerfstudio's viewer; returns the frustum handles.

    Args:
        viewer: the trainer's ``viewer_state`` (a ``nerfstudio.viewer.viewer.Viewer``) or None.
        views: the repaired views of one round (poses in the same frame as the train cameras).
        round_index: names the round's scene node; defaults to ``views.round_index``.

    Returns the handles drawn (an empty list with no viewer); keep them for :func:`remove_repaired_views`.
    Never raises: a viser error prints a warning and returns the handles drawn before it.
    """
    scene = _scene_of(viewer)
    if scene is None or len(views) == 0:
        return []
    round_index = views.round_index if round_index is None else round_index
    scale = float(getattr(getattr(viewer, "config", None), "camera_frustum_scale", 0.1))
    handles: List[Any] = []
    try:
        poses = views.camera_to_worlds.detach().cpu().numpy()
        fy = views.fy.detach().cpu().numpy()
        height, width = views.height, views.width
        for i in range(len(views)):
            wxyz, position = _viser_pose(poses[i])
            handle = scene.add_camera_frustum(
                name=frustum_name(round_index, i),
                fov=2.0 * math.atan(height / (2.0 * float(fy[i]))),  # viser's fov is vertical
                aspect=width / height,
                scale=scale,
                color=FRUSTUM_COLOR,
                image=_thumbnail(views.rgb[i].detach().cpu().numpy()),
                wxyz=wxyz,
                position=position,
            )
            handles.append(handle)
            _move_client_camera_on_click(handle)
    except Exception as error:  # noqa: BLE001 - the viewer is a convenience; training must go on
        CONSOLE.print(f"[yellow]GenFusion: could not show round {round_index}'s repaired views in the viewer "
                      f"({type(error).__name__}: {error}); training continues.")
    return handles


def remove_repaired_views(handles: List[Any]) -> None:
    """Remove the frustums in ``handles`` from the viewer and empty the list. Never raises."""
    failed: Optional[Exception] = None
    for handle in handles:
        try:
            handle.remove()
        except Exception as error:  # noqa: BLE001
            failed = failed or error
    handles.clear()
    if failed is not None:
        CONSOLE.print(f"[yellow]GenFusion: could not remove repaired views from the viewer "
                      f"({type(failed).__name__}: {failed}); training continues.")
