"""Training of GenFusion's RGB-D video diffusion model on masked-reconstruction renders."""
