"""GenFusion as a nerfstudio method plugin.

Sub-packages: ``scenes`` (procedural datasets), ``rasterize`` (2DGS rasterizer, torch + gsplat backends),
``model`` (the nerfstudio model and densification), ``video`` (the RGB-D video diffusion runtime).
Importing this package is cheap on purpose: nerfstudio imports every method plugin for every ``ns-*`` command.
"""

__version__ = "0.1.0"
