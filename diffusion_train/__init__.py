"""Training of GenFusion's RGB-D video diffusion model on masked-reconstruction renders.

* :mod:`.make_data` -- ``genfusion-make-data``: masked reconstruction of each scene, full-frame RGB-D renders, clips;
* :mod:`.clips` -- the on-disk clip format (per-scene safetensors + JSON manifests);
* :mod:`.reconstruction`, :mod:`.mono_depth` -- the reconstruction/render step and the monocular target-depth fallback;
* :mod:`.dataset`, :mod:`.objective`, :mod:`.memory`, :mod:`.samples` -- training samples, the v-prediction
  objective, activation checkpointing and sample logging;
* :mod:`.train` -- ``genfusion-train-video`` on accelerate.
"""
