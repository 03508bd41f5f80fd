"""The ViT of one architecture, and the functional forward pass shared with the supernet.

Parameter names and shapes follow timm's `VisionTransformer` (patch_embed.proj, cls_token,
pos_embed, blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head), with the
qkv rows laid out as [q; k; v] and each head a contiguous block of `head_dim` channels. So a
subnet without relative position loads straight into timm. The supernet is this same module at
its super sizes; `vit_forward` runs either, on whole or on sliced tensors, and its pieces (`vit_blocks`,
`vit_features`, `vit_pool`, `vit_head`) are the `ViT` methods timm users expect (`forward_features`, ...).
"""

# No `from __future__ import annotations`: torch.fx copies `forward`'s annotations into the code it generates, where
# TorchScript cannot read them as strings (timm's test_model_forward_fx_torchscript).
from collections import deque
from collections.abc import Iterator, Mapping
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from zoo.families.vit.arch import ViTArch
from zoo.families.vit.space import ViTSpace
from zoo.layers import GradCheckpointing, checkpointed, drop_path, reset_classifier


def rel_pos_index(grid: int, max_rel: int) -> Tensor:
    """(2, N, N) row indices into the vertical and horizontal tables for N = grid²+1 tokens.

    Patch pairs get clip(Δ, -max_rel, max_rel) + max_rel + 1; any pair with the class token gets 0.
    """
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, grid²)
    delta = (coords[:, None, :] - coords[:, :, None]).clamp(-max_rel, max_rel) + max_rel + 1
    n = grid * grid + 1
    index = torch.zeros(2, n, n, dtype=torch.long)
    index[:, 1:, 1:] = delta
    return index


def rel_pos_tables_size(space: ViTSpace) -> int:
    """Rows of each relative-position table: 2·max_rel + 1 offsets plus row 0 for the class token."""
    return 2 * space.grid_size + 2


def attention(x: Tensor, p: Mapping[str, Tensor], pre: str, num_heads: int, head_dim: int,
              rel_index: Tensor | None) -> Tensor:
    B, N, _ = x.shape
    qkv = F.linear(x, p[pre + "qkv.weight"], p[pre + "qkv.bias"])
    q, k, v = qkv.view(B, N, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    if rel_index is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        # 2-D relative position (AutoFormer): tables shared by all heads, for keys and values.
        # The value term needs the attention probabilities, which SDPA does not return.
        r_k = p[pre + "rel_pos_k.table_v"][rel_index[0]] + p[pre + "rel_pos_k.table_h"][rel_index[1]]
        r_v = p[pre + "rel_pos_v.table_v"][rel_index[0]] + p[pre + "rel_pos_v.table_h"][rel_index[1]]
        logits = q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, r_k)
        attn = (logits * head_dim**-0.5).softmax(dim=-1)
        out = attn @ v + torch.einsum("bhij,ijd->bhid", attn, r_v)
    out = out.transpose(1, 2).reshape(B, N, num_heads * head_dim)
    return F.linear(out, p[pre + "proj.weight"], p[pre + "proj.bias"])


def _layer_norm(p: Mapping[str, Tensor], x: Tensor, name: str, eps: float) -> Tensor:
    weight = p[name + ".weight"]
    return F.layer_norm(x, weight.shape, weight, p[name + ".bias"], eps)


def vit_block(p: Mapping[str, Tensor], pre: str, num_heads: int, space: ViTSpace, rel_index: Tensor | None,
              rate: float, training: bool, x: Tensor) -> Tensor:
    """One block (parameters named `pre`...): attention, then the MLP, each a residual branch that stochastic depth
    drops per sample at `rate` in training."""
    h = attention(_layer_norm(p, x, pre + "norm1", space.norm_eps), p, pre + "attn.", num_heads, space.head_dim,
                  rel_index)
    x = x + drop_path(h, rate, training)
    h = F.linear(_layer_norm(p, x, pre + "norm2", space.norm_eps), p[pre + "mlp.fc1.weight"], p[pre + "mlp.fc1.bias"])
    h = F.linear(F.gelu(h), p[pre + "mlp.fc2.weight"], p[pre + "mlp.fc2.bias"])
    return x + drop_path(h, rate, training)


def vit_blocks(p: Mapping[str, Tensor], x: Tensor, arch: ViTArch, space: ViTSpace,
               rel_index: Tensor | None = None, drop_rates: tuple[float, ...] = (),
               training: bool = False, checkpoint: bool = False) -> Iterator[Tensor]:
    """The tokens (B, N, E) after each block in turn: a consumer that stops early skips the later blocks.
    `checkpoint`: each block's activations are recomputed in the backward pass (timm's grad checkpointing)."""
    x = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=space.patch_size)
    x = x.flatten(2).transpose(1, 2)
    # expand_as, not expand(B, -1, -1): torch.fx traces a tensor-shaped size, not a traced int
    x = torch.cat([p["cls_token"].expand_as(x[:, :1]), x], dim=1) + p["pos_embed"]
    for i in range(arch.depth):
        rate = drop_rates[i] if drop_rates else 0.0
        x = checkpointed(partial(vit_block, p, f"blocks.{i}.", arch.num_heads[i], space, rel_index, rate, training),
                         x, checkpoint)
        yield x


def vit_norm(p: Mapping[str, Tensor], x: Tensor, space: ViTSpace) -> Tensor:
    """The final norm, when the model still has one (`prune_intermediate_layers` may drop it)."""
    return _layer_norm(p, x, "norm", space.norm_eps) if "norm.weight" in p else x


def vit_features(p: Mapping[str, Tensor], x: Tensor, arch: ViTArch, space: ViTSpace,
                 rel_index: Tensor | None = None, drop_rates: tuple[float, ...] = (),
                 training: bool = False, checkpoint: bool = False) -> Tensor:
    """All tokens after the last block and the final norm (timm's `forward_features`)."""
    last = deque(vit_blocks(p, x, arch, space, rel_index, drop_rates, training, checkpoint), maxlen=1).pop()  # keeps 1
    return vit_norm(p, last, space)


def vit_pool(x: Tensor, space: ViTSpace) -> Tensor:
    """One vector per image: the mean of the patch tokens, or the class token."""
    return x[:, 1:].mean(dim=1) if space.pool == "avg" else x[:, 0]


def vit_head(p: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Logits, or the pooled features themselves when the head was removed (num_classes=0, as in timm)."""
    return F.linear(x, p["head.weight"], p["head.bias"]) if "head.weight" in p else x


def vit_forward(p: Mapping[str, Tensor], x: Tensor, arch: ViTArch, space: ViTSpace,
                rel_index: Tensor | None = None, drop_rates: tuple[float, ...] = (),
                training: bool = False, checkpoint: bool = False) -> Tensor:
    """Logits of `arch` from tensors `p` named as in `ViT` and sized exactly for `arch`."""
    return vit_head(p, vit_pool(vit_features(p, x, arch, space, rel_index, drop_rates, training, checkpoint), space))


class _RelPos(nn.Module):
    """Vertical and horizontal tables of one relative-position embedding (keys or values)."""

    def __init__(self, rows: int, head_dim: int) -> None:
        super().__init__()
        self.table_v = nn.Parameter(torch.zeros(rows, head_dim))
        self.table_h = nn.Parameter(torch.zeros(rows, head_dim))


def _block(space: ViTSpace, E: int, Q: int, hidden: int) -> nn.Module:
    attn = nn.Module()
    attn.qkv = nn.Linear(E, 3 * Q)
    attn.proj = nn.Linear(Q, E)
    if space.rel_pos:
        rows = rel_pos_tables_size(space)
        attn.rel_pos_k = _RelPos(rows, space.head_dim)
        attn.rel_pos_v = _RelPos(rows, space.head_dim)
    mlp = nn.Module()
    mlp.fc1 = nn.Linear(E, hidden)
    mlp.fc2 = nn.Linear(hidden, E)
    block = nn.Module()
    block.norm1, block.attn = nn.LayerNorm(E, eps=space.norm_eps), attn
    block.norm2, block.mlp = nn.LayerNorm(E, eps=space.norm_eps), mlp
    return block


# timm's names for our two poolings (`global_pool`)
TIMM_POOL = {"avg": "avg", "cls": "token"}


def _init_parameter(name: str, t: Tensor) -> None:
    """AutoFormer init: truncated normal (std .02) for matrices, tokens and tables; LayerNorm 1/0; biases 0."""
    if t.dim() == 1:
        nn.init.ones_(t) if "norm" in name and name.endswith("weight") else nn.init.zeros_(t)
    else:
        nn.init.trunc_normal_(t, std=0.02)


class ViT(GradCheckpointing, nn.Module):
    """A plain ViT with exactly the weights of `arch` (no dependency on the supernet).

    It has timm's classifier API (`get_classifier`, `reset_classifier`, `forward_features`, `forward_head`,
    `forward_intermediates`, `prune_intermediate_layers`, `feature_info`, `head_hidden_size`,
    `set_grad_checkpointing`), each a piece of `vit_forward`.
    `space` always describes this model's input and head: a new head of N classes gives a space with N.
    `family`, `timm_name` and `first_conv` say what it is to timm and in its self-description (zoo.pretrained).
    """

    family: ClassVar[str] = "vit"
    timm_name: ClassVar[str] = "prezoo_vit"
    first_conv: ClassVar[str] = "patch_embed.proj"

    def __init__(self, space: ViTSpace, arch: ViTArch, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.space, self.arch = space, arch
        E, L = arch.embed_dim, arch.depth
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(space.in_chans, E, space.patch_size, space.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.zeros(1, space.num_tokens, E))
        self.blocks = nn.ModuleList(
            _block(space, E, arch.qkv_dim(i, space.head_dim), arch.mlp_dim(i)) for i in range(L))
        self.norm = nn.LayerNorm(E, eps=space.norm_eps)
        self.head = nn.Linear(E, space.num_classes)
        self.num_classes, self.in_chans, self.num_features = space.num_classes, space.in_chans, E
        self.head_hidden_size = E  # what forward_head(pre_logits=True) gives, as timm names it
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=E, reduction=space.patch_size) for i in range(L)]
        # Stochastic depth rises linearly over the blocks of this module (AutoFormer schedule).
        self.drop_rates = tuple(drop_path_rate * i / max(L - 1, 1) for i in range(L))
        index = rel_pos_index(space.grid_size, space.grid_size) if space.rel_pos else None
        self.register_buffer("rel_index", index, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, t in self.named_parameters():
            if not name.startswith("patch_embed"):  # the conv keeps PyTorch's default init, as in AutoFormer
                _init_parameter(name, t)

    @property
    def global_pool(self) -> str:
        return TIMM_POOL[self.space.pool]

    def _params(self) -> dict[str, Tensor]:
        return dict(self.named_parameters())

    def forward(self, x: Tensor) -> Tensor:
        return vit_forward(self._params(), x, self.arch, self.space, self.rel_index, self.drop_rates, self.training,
                           self.grad_checkpointing)

    # -- timm's classifier API -------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none; the model then returns pooled features), as in timm; the pooling
        cannot change (`forward_features` gives the unpooled tokens)."""
        reset_classifier(self, num_classes, global_pool, _init_parameter)

    def forward_features(self, x: Tensor) -> Tensor:
        """All tokens (B, N, E) after the final norm."""
        return vit_features(self._params(), x, self.arch, self.space, self.rel_index, self.drop_rates,
                            self.training, self.grad_checkpointing)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the tokens of `forward_features`; the logits, or the pooled features with `pre_logits`."""
        pooled = vit_pool(x, self.space)
        return pooled if pre_logits else vit_head(self._params(), pooled)

    def forward_intermediates(self, x: Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The outputs of the blocks in `indices` (an int n: the last n; None: all), as timm's ViTs give them:
        patch tokens as (B, E, H, W) ("NCHW") or (B, H·W, E) ("NLC"), optionally with the class token
        (`return_prefix_tokens`) and the final norm (`norm`); with the final features unless `intermediates_only`.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        p = self._params()
        taken, last = [], x
        for i, last in enumerate(vit_blocks(p, x, self.arch, self.space, self.rel_index, self.drop_rates,
                                            self.training, self.grad_checkpointing)):
            if i in take:
                taken.append(vit_norm(p, last, self.space) if norm else last)
            if stop_early and i == max_index:
                break
        grid = self.space.grid_size
        patches = [t[:, 1:] if output_fmt == "NLC" else
                   t[:, 1:].reshape(len(t), grid, grid, -1).permute(0, 3, 1, 2).contiguous() for t in taken]
        intermediates = list(zip(patches, [t[:, :1] for t in taken], strict=True)) if return_prefix_tokens \
            else patches
        return intermediates if intermediates_only else (vit_norm(p, last, self.space), intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of `indices` (and the final norm, the head): what timm's
        `features_only` wrapper calls, so a feature extractor computes nothing it does not return."""
        take, max_index = feature_take_indices(len(self.blocks), indices)
        depth = max_index + 1
        a = self.arch
        self.arch = ViTArch(a.embed_dim, depth, a.num_heads[:depth], a.mlp_ratios[:depth])
        self.blocks = self.blocks[:depth]
        self.drop_rates, self.feature_info = self.drop_rates[:depth], self.feature_info[:depth]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take
