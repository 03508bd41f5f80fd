"""Closed-form parameter count and FLOPs of any architecture, without building a model.

FLOPs convention: multiply-accumulates (MACs) of one image, as the PreNAS/AutoFormer papers
count "FLOPs". Counted: every matrix product (patch conv, qkv, q·kᵀ, attn·v, proj, fc1, fc2, head,
and with relative position q·r_kᵀ and attn·r_v), over all N = patches + 1 tokens. Not counted:
biases, LayerNorm, softmax, GELU, residual adds, pooling and the position-table gathers (O(N·E)
element-wise work, under 1% of the total). This is exactly what
`torch.utils.flop_counter.FlopCounterMode` counts (its FLOPs are 2 x MACs) on our modules.
"""

from __future__ import annotations

from zoo.families.vit.arch import ViTArch
from zoo.families.vit.space import ViTSpace

# stored in every zoo.json as written (its module names are from before zoo.families): never reworded
FLOPS_RULE = ("multiply-accumulates (MACs) per image over every matrix product (patch conv, qkv, q·kᵀ, "
              "attn·v, proj, fc1, fc2, head; with relative position also q·r_kᵀ and attn·r_v) at all "
              "patches + 1 tokens; biases, norms, softmax, GELU, adds and pooling not counted (zoo.cost)")


def params(space: ViTSpace, arch: ViTArch) -> int:
    """Number of parameters of the standalone subnet (equals its numel exactly)."""
    from zoo.families.vit.model import rel_pos_tables_size  # it imports torch, which the cost model should not

    E, C = arch.embed_dim, space.num_classes
    total = space.in_chans * space.patch_size**2 * E + E  # patch conv
    total += E + space.num_tokens * E  # cls token, position embedding
    total += 2 * E + C * E + C  # final norm, head
    rel = 4 * rel_pos_tables_size(space) * space.head_dim if space.rel_pos else 0
    for i in range(arch.depth):
        Q, H = arch.qkv_dim(i, space.head_dim), arch.mlp_dim(i)
        total += 4 * E  # two LayerNorms
        total += 3 * Q * E + 3 * Q + Q * E + E  # qkv, proj
        total += H * E + H + H * E + E  # fc1, fc2
        total += rel
    return total


def flops(space: ViTSpace, arch: ViTArch) -> int:
    """Multiply-accumulates for one image (see the module docstring for what counts)."""
    E, N = arch.embed_dim, space.num_tokens
    total = space.grid_size**2 * space.in_chans * space.patch_size**2 * E  # patch conv
    total += E * space.num_classes  # head, on the pooled token
    attn_matmuls = 4 if space.rel_pos else 2  # q·kᵀ, attn·v (+ q·r_kᵀ, attn·r_v)
    for i in range(arch.depth):
        Q, H = arch.qkv_dim(i, space.head_dim), arch.mlp_dim(i)
        total += N * E * 3 * Q + N * Q * E  # qkv, proj
        total += attn_matmuls * N * N * Q
        total += 2 * N * E * H  # fc1, fc2
    return total


def cost_range(space: ViTSpace) -> tuple[tuple[int, int], tuple[int, int]]:
    """((min params, max params), (min FLOPs, max FLOPs)): both grow with every choice."""
    lo, hi = space.smallest_arch(), space.largest_arch()
    return (params(space, lo), params(space, hi)), (flops(space, lo), flops(space, hi))
