"""The ViT of one architecture, and the functional forward pass shared with the supernet.

Parameter names and shapes follow timm's `VisionTransformer` (patch_embed.proj, cls_token,
pos_embed, blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head), with the
qkv rows laid out as [q; k; v] and each head a contiguous block of `head_dim` channels. So a
subnet without relative position loads straight into timm. The supernet is this same module at
its super sizes; `vit_forward` runs either, on whole or on sliced tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.arch import Arch
from zoo.space import SearchSpace


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


def rel_pos_tables_size(space: SearchSpace) -> int:
    """Rows of each relative-position table: 2·max_rel + 1 offsets plus row 0 for the class token."""
    return 2 * space.grid_size + 2


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *(1,) * (x.dim() - 1)).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


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


def vit_forward(p: Mapping[str, Tensor], x: Tensor, arch: Arch, space: SearchSpace,
                rel_index: Tensor | None = None, drop_rates: tuple[float, ...] = (),
                training: bool = False) -> Tensor:
    """Logits of `arch` from tensors `p` named as in `ViT` and sized exactly for `arch`."""
    E, eps = arch.embed_dim, space.norm_eps
    ln = lambda t, name: F.layer_norm(t, (E,), p[name + ".weight"], p[name + ".bias"], eps)
    x = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=space.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([p["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + p["pos_embed"]
    for i in range(arch.depth):
        pre = f"blocks.{i}."
        rate = drop_rates[i] if drop_rates else 0.0
        h = attention(ln(x, pre + "norm1"), p, pre + "attn.", arch.num_heads[i], space.head_dim, rel_index)
        x = x + drop_path(h, rate, training)
        h = F.linear(ln(x, pre + "norm2"), p[pre + "mlp.fc1.weight"], p[pre + "mlp.fc1.bias"])
        h = F.linear(F.gelu(h), p[pre + "mlp.fc2.weight"], p[pre + "mlp.fc2.bias"])
        x = x + drop_path(h, rate, training)
    x = ln(x, "norm")
    x = x[:, 1:].mean(dim=1) if space.pool == "avg" else x[:, 0]
    return F.linear(x, p["head.weight"], p["head.bias"])


class _RelPos(nn.Module):
    """Vertical and horizontal tables of one relative-position embedding (keys or values)."""

    def __init__(self, rows: int, head_dim: int) -> None:
        super().__init__()
        self.table_v = nn.Parameter(torch.zeros(rows, head_dim))
        self.table_h = nn.Parameter(torch.zeros(rows, head_dim))


def _block(space: SearchSpace, E: int, Q: int, hidden: int) -> nn.Module:
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


class ViT(nn.Module):
    """A plain ViT with exactly the weights of `arch` (no dependency on the supernet)."""

    def __init__(self, space: SearchSpace, arch: Arch, drop_path_rate: float = 0.0) -> None:
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
        # Stochastic depth rises linearly over the blocks of this module (AutoFormer schedule).
        self.drop_rates = tuple(drop_path_rate * i / max(L - 1, 1) for i in range(L))
        index = rel_pos_index(space.grid_size, space.grid_size) if space.rel_pos else None
        self.register_buffer("rel_index", index, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """AutoFormer init: truncated normal (std .02) for linears, tokens and tables; LN 1/0."""
        for name, t in self.named_parameters():
            if name.startswith("patch_embed"):
                continue  # the conv keeps PyTorch's default init, as in AutoFormer
            if t.dim() == 1:
                nn.init.ones_(t) if "norm" in name and name.endswith("weight") else nn.init.zeros_(t)
            else:
                nn.init.trunc_normal_(t, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        p = dict(self.named_parameters())
        return vit_forward(p, x, self.arch, self.space, self.rel_index, self.drop_rates, self.training)
