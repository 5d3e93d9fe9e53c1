"""Show repaired training views in nerfstudio's live web viewer.

nerfstudio's viewer draws its camera frustums once, at start-up, from the train dataset, so repaired views
that a fusion round adds at run time would only show up after reloading the run. :func:`show_repaired_views`
draws them right away, one frustum (with a thumbnail of the repaired image) per view, under their own
scene-tree node ``/genfusion_repaired/round_XX/view_XXXX`` and in a distinct colour, so they can be told apart
from the real cameras; :func:`remove_repaired_views` takes them away again when a round replaces the previous
one.

nerfstudio draws its training frustums at a fixed ``--viewer.camera-frustum-scale`` (0.1 viewer units) while
a dataset's cameras spread over ~20 units (poses in [-1, 1] times ``VISER_NERFSTUDIO_SCALE_RATIO``), so at
that size the repaired views were specks from the viewer's start camera. They are drawn at a fraction of the
cameras' extent instead (:func:`frustum_scale`), in magenta, and a "Show repaired views" checkbox in the
viewer's panel hides or shows them all (it toggles their parent scene node, so later rounds follow it).

Both are best-effort: with no viewer (``--vis tensorboard``/``wandb``, the legacy viewer, ``ns-eval``) they do
nothing, and an error from viser is reported once as a warning, never raised into training.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from genfusion_ns.axes import flip_camera_axes
from genfusion_ns.fusion.views import RepairedViews

SCENE_NODE = "/genfusion_repaired"
"""Parent scene-tree node of every repaired-view frustum."""
FRUSTUM_COLOR = (255, 0, 255)
"""Magenta: unlike the viewer's near-black training frustums, its yellow-orange accent colour and the colours
of typical scene content."""
RELATIVE_FRUSTUM_SIZE = 0.04
"""Frustum size as a share of the largest side of the box around all drawn cameras (training and repaired)."""
CHECKBOX_LABEL = "Show repaired views"
THUMBNAIL_SIZE = 100
"""Longest side, in pixels, of the image drawn on a frustum (nerfstudio's own thumbnails are ~100 px)."""

# OpenGL (nerfstudio: +X right, +Y up, looking down -Z) to OpenCV (viser: +X right, +Y down, looking down +Z):
# negate the camera's Y and Z axes, i.e. a half turn about its X axis.


def frustum_name(round_index: int, view_index: int) -> str:
    return f"{SCENE_NODE}/round_{round_index:02d}/view_{view_index:04d}"


def frustum_scale(camera_positions: np.ndarray, minimum: float = 0.1) -> float:
    """Frustum size (viewer units) for cameras at ``camera_positions`` ``[N,3]`` (viewer units).

    :data:`RELATIVE_FRUSTUM_SIZE` of the largest side of their bounding box, so the frustums stay the same
    share of the scene whatever its scale; never below ``minimum`` (nerfstudio's ``camera_frustum_scale``,
    also what a single camera or an empty list gets).
    """
    positions = np.asarray(camera_positions, dtype=np.float64).reshape(-1, 3)
    if len(positions) < 2:
        return float(minimum)
    extent = float((positions.max(axis=0) - positions.min(axis=0)).max())
    return max(float(minimum), RELATIVE_FRUSTUM_SIZE * extent)


def _drawn_camera_positions(viewer: Any) -> np.ndarray:
    """Positions ``[N,3]`` (viewer units) of the training frustums nerfstudio drew (``camera_handles``)."""
    handles = getattr(viewer, "camera_handles", None) or {}
    positions = [np.asarray(h.position, dtype=np.float64) for h in handles.values() if hasattr(h, "position")]
    return np.stack(positions) if positions else np.zeros((0, 3))


def _repaired_node(viewer: Any, scene: Any) -> None:
    """Once per viewer: the repaired views' parent scene node and the GUI checkbox that shows or hides it.

    Kept on the viewer (``_genfusion_repaired_toggle``) so every round, and every pipeline sharing the viewer,
    reuses them; the checkbox state then also applies to rounds added while it is off.
    """
    if getattr(viewer, "_genfusion_repaired_toggle", None) is not None:
        return
    node = scene.add_frame(SCENE_NODE, show_axes=False)
    gui = getattr(getattr(viewer, "viser_server", None), "gui", None)
    checkbox = None
    if gui is not None:
        checkbox = gui.add_checkbox(CHECKBOX_LABEL, initial_value=True,
                                    hint="Frustums of the views GenFusion's repair rounds added (magenta).")

        def toggle(_: Any) -> None:
            node.visible = bool(checkbox.value)

        checkbox.on_update(toggle)
    viewer._genfusion_repaired_toggle = (node, checkbox)


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

    rotation = flip_camera_axes(camera_to_world[:3, :3].astype(np.float64))
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
    minimum = float(getattr(getattr(viewer, "config", None), "camera_frustum_scale", 0.1))
    handles: List[Any] = []
    try:
        _repaired_node(viewer, scene)
        poses = views.camera_to_worlds.detach().cpu().numpy()
        fy = views.fy.detach().cpu().numpy()
        height, width = views.height, views.width
        placed = [_viser_pose(pose) for pose in poses]
        positions = np.concatenate([_drawn_camera_positions(viewer), np.stack([p for _, p in placed])])
        scale = frustum_scale(positions, minimum)
        for i, (wxyz, position) in enumerate(placed):
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
