"""Key mappings from the authors' GenFusion checkpoint names to the diffusers/transformers component names.

Every mapping is a table generated from the model config (block counts, depth, layers), so it covers exactly the
keys the configured modules have and nothing else. Tables are prefix based (the longest matching prefix wins, a
full key is the longest prefix of itself) plus two reshapes: fused projections that diffusers keeps separate are
split along dim 0, and Conv1d(kernel 1) weights used as linear layers lose their last axis. Tables are also used
backwards, to name a missing weight the way the authors' checkpoint would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "embedder.model.visual."
RESAMPLER_PREFIX = "image_proj_model."

# Root buffers of the authors' LatentDiffusion (DDPM.register_schedule + dynamic rescale): read for checks only.
SCHEDULE_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "scale_arr",
    }
)
# Weights the authors' model holds but never uses: the OpenCLIP text tower (its output is discarded), the text-side
# leftovers of the image embedder's CLIP, and the image tower's final projection (only the tokens are used).
UNUSED_PREFIXES = ("cond_stage_model.",)
UNUSED_KEYS = frozenset(
    {
        "embedder.model.token_embedding.weight",
        "embedder.model.positional_embedding",
        "embedder.model.ln_final.weight",
        "embedder.model.ln_final.bias",
        "embedder.model.text_projection",
        "embedder.model.logit_scale",
        "embedder.model.visual.proj",
    }
)


def is_unused_key(key: str) -> bool:
    """True for checkpoint entries that are dropped on purpose (unused weights); schedule buffers excluded."""
    return key in UNUSED_KEYS or key.startswith(UNUSED_PREFIXES)


@dataclass
class KeyMapping:
    """Authors' names → one component's names.

    Attributes:
        prefixes: authors' prefix (ending in ".") or full key → component prefix or full key.
        splits: authors' full key → component keys; the tensor is split into equal parts along dim 0.
        squeeze: authors' full keys whose trailing size-1 axis is dropped (Conv1d k=1 → Linear).
    """

    prefixes: dict[str, str] = field(default_factory=dict)
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    squeeze: set[str] = field(default_factory=set)

    def _lookup(self, key: str, table: dict[str, str]) -> str | None:
        if key in table:
            return table[key]
        cut = key.rfind(".", 0, len(key) - 1)
        while cut >= 0:
            prefix = key[: cut + 1]
            if prefix in table:
                return table[prefix] + key[cut + 1 :]
            cut = key.rfind(".", 0, cut)
        return table[""] + key if "" in table else None

    def handles(self, key: str) -> bool:
        return key in self.splits or self._lookup(key, self.prefixes) is not None

    def convert(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The component entries of one authors' entry (empty when the key is not covered)."""
        if key in self.splits:
            targets = self.splits[key]
            if tensor.shape[0] % len(targets):
                raise ValueError(
                    f"{key}: dim 0 of shape {tuple(tensor.shape)} is not divisible by {len(targets)}"
                )
            return list(zip(targets, tensor.chunk(len(targets), dim=0)))
        target = self._lookup(key, self.prefixes)
        if target is None:
            return []
        if key in self.squeeze:
            if tensor.shape[-1] != 1:
                raise ValueError(
                    f"{key}: expected a trailing axis of size 1 (Conv1d k=1), got {tuple(tensor.shape)}"
                )
            tensor = tensor.squeeze(-1)
        return [(target, tensor)]

    def authors_name(self, component_key: str) -> str:
        """The authors' checkpoint key that feeds ``component_key`` (for error messages)."""
        for source, targets in self.splits.items():
            if component_key in targets:
                return source
        inverse = {target: source for source, target in self.prefixes.items()}
        found = self._lookup(component_key, inverse)
        return found if found is not None else f"(no authors' equivalent for {component_key})"


def _resblock(table: dict[str, str], src: str, dst: str, j: int) -> None:
    """An lvdm ResBlock with its temporal conv block (``temopral_conv``, sic) → ``resnets.j`` + ``temp_convs.j``."""
    for authors, ours in (
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ):
        table[f"{src}{authors}"] = f"{dst}resnets.{j}.{ours}"
    table[f"{src}temopral_conv."] = f"{dst}temp_convs.{j}."


def _transformers(
    table: dict[str, str], src_spatial: str, src_temporal: str, dst: str, j: int, split: bool
) -> None:
    """A SpatialTransformer + TemporalTransformer pair → ``attentions.j`` + ``temp_attentions.j``."""
    table[src_spatial] = f"{dst}attentions.{j}."
    table[src_temporal] = f"{dst}temp_attentions.{j}."
    if split:  # the image key/values live in the attention processor
        for name in ("to_k_ip.", "to_v_ip."):
            table[f"{src_spatial}transformer_blocks.0.attn2.{name}"] = (
                f"{dst}attentions.{j}.transformer_blocks.0.attn2.processor.{name}"
            )


def unet_key_mapping(unet_config: dict[str, Any]) -> KeyMapping:
    """Authors' ``UNetModel`` → :class:`GenFusionUNet` (``unet_config``: the GenFusionUNet kwargs)."""
    p = UNET_PREFIX
    has_attention = [t.startswith("CrossAttn") for t in unet_config["down_block_types"]]
    up_attention = [t.startswith("CrossAttn") for t in unet_config["up_block_types"]]
    num_levels, per_level = len(has_attention), int(unet_config["layers_per_block"])
    split = unet_config.get("context_split_index") is not None
    table = {
        f"{p}time_embed.0.": "time_embedding.linear_1.",
        f"{p}time_embed.2.": "time_embedding.linear_2.",
        f"{p}input_blocks.0.0.": "conv_in.",
        f"{p}init_attn.0.": "transformer_in.",
        f"{p}out.0.": "conv_norm_out.",
        f"{p}out.2.": "conv_out.",
    }
    if unet_config.get("fps_conditioning", True):
        table[f"{p}fps_embedding.0."] = "time_embedding.fps_embedding.linear_1."
        table[f"{p}fps_embedding.2."] = "time_embedding.fps_embedding.linear_2."

    index = 1
    for level in range(num_levels):
        dst = f"down_blocks.{level}."
        for j in range(per_level):
            src = f"{p}input_blocks.{index}."
            _resblock(table, f"{src}0.", dst, j)
            if has_attention[level]:
                _transformers(table, f"{src}1.", f"{src}2.", dst, j, split)
            index += 1
        if level != num_levels - 1:
            table[f"{p}input_blocks.{index}.0.op."] = f"{dst}downsamplers.0.conv."
            index += 1

    mid = f"{p}middle_block."
    _resblock(table, f"{mid}0.", "mid_block.", 0)
    _transformers(table, f"{mid}1.", f"{mid}2.", "mid_block.", 0, split)
    _resblock(table, f"{mid}3.", "mid_block.", 1)

    index = 0
    for up in range(num_levels):
        dst = f"up_blocks.{up}."
        for j in range(per_level + 1):
            src = f"{p}output_blocks.{index}."
            _resblock(table, f"{src}0.", dst, j)
            if up_attention[up]:
                _transformers(table, f"{src}1.", f"{src}2.", dst, j, split)
            if j == per_level and up != num_levels - 1:
                table[f"{src}{3 if up_attention[up] else 1}.conv."] = f"{dst}upsamplers.0.conv."
            index += 1

    squeeze = {f"{p}init_attn.0.proj_in.weight", f"{p}init_attn.0.proj_out.weight"}
    return KeyMapping(prefixes=table, squeeze=squeeze)


def resampler_key_mapping(depth: int) -> KeyMapping:
    """Authors' ``Resampler`` → diffusers ``IPAdapterPlusImageProjection`` (:class:`GenFusionResampler`)."""
    p = RESAMPLER_PREFIX
    table = {f"{p}latents": "latents", f"{p}proj_in.": "proj_in.", f"{p}proj_out.": "proj_out.",
             f"{p}norm_out.": "norm_out."}  # fmt: skip
    splits = {}
    for i in range(depth):
        src, dst = f"{p}layers.{i}.", f"layers.{i}."
        table.update(
            {
                f"{src}0.norm1.": f"{dst}ln0.",
                f"{src}0.norm2.": f"{dst}ln1.",
                f"{src}0.to_q.": f"{dst}attn.to_q.",
                f"{src}0.to_out.": f"{dst}attn.to_out.0.",
                f"{src}1.0.": f"{dst}ff.0.",
                f"{src}1.1.": f"{dst}ff.1.net.0.proj.",
                f"{src}1.3.": f"{dst}ff.1.net.2.",
            }
        )
        splits[f"{src}0.to_kv.weight"] = (f"{dst}attn.to_k.weight", f"{dst}attn.to_v.weight")
    return KeyMapping(prefixes=table, splits=splits)


def clip_vision_key_mapping(num_layers: int, module_prefix: str = "") -> KeyMapping:
    """OpenCLIP ``VisionTransformer`` → transformers ``CLIPVisionModel``.

    ``module_prefix`` is the path of the vision transformer inside ``CLIPVisionModel``'s state dict (``""`` in
    transformers 5, ``"vision_model."`` in 4.x); ``ln_post`` is kept as ``post_layernorm`` although GenFusion reads
    the tokens before it.
    """
    p, m = CLIP_PREFIX, module_prefix
    table = {
        f"{p}conv1.": f"{m}embeddings.patch_embedding.",
        f"{p}class_embedding": f"{m}embeddings.class_embedding",
        f"{p}positional_embedding": f"{m}embeddings.position_embedding.weight",
        f"{p}ln_pre.": f"{m}pre_layrnorm.",
        f"{p}ln_post.": f"{m}post_layernorm.",
    }
    splits = {}
    for i in range(num_layers):
        src, dst = f"{p}transformer.resblocks.{i}.", f"{m}encoder.layers.{i}."
        table.update(
            {
                f"{src}ln_1.": f"{dst}layer_norm1.",
                f"{src}ln_2.": f"{dst}layer_norm2.",
                f"{src}attn.out_proj.": f"{dst}self_attn.out_proj.",
                f"{src}mlp.c_fc.": f"{dst}mlp.fc1.",
                f"{src}mlp.c_proj.": f"{dst}mlp.fc2.",
            }
        )
        for kind in ("weight", "bias"):
            splits[f"{src}attn.in_proj_{kind}"] = tuple(
                f"{dst}self_attn.{q}_proj.{kind}" for q in ("q", "k", "v")
            )
    return KeyMapping(prefixes=table, splits=splits)


def vae_key_mapping() -> KeyMapping:
    """The authors' first stage already is a diffusers ``AutoencoderKL``: strip the prefix."""
    return KeyMapping(prefixes={VAE_PREFIX: ""})
