"""Weight-sharing ViT supernet: the largest ViT, sliced by prefix for any architecture.

The slicing rules live here once (`slice_tensor`) and serve the forward pass (views), the
extractor (copies), the selector (weights and gradients) and the importer (official checkpoints).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.families.vit.arch import ViTArch
from zoo.families.vit.model import ViT, vit_forward
from zoo.families.vit.space import ViTSpace

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def slice_tensor(name: str, t: Tensor, space: ViTSpace, arch: ViTArch) -> Tensor | None:
    """The part of supernet tensor `name` that `arch` uses (a view), or None if it uses none.

    First-k prefix slicing everywhere: embed channels [:E], heads [:h] (of each of q, k and v),
    MLP hidden units [:floor(E·r)]. Relative-position tables are shared by heads, so whole.
    """
    E = arch.embed_dim
    m = _BLOCK.fullmatch(name)
    if m is None:
        if name in ("patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"):
            return t[:E]
        if name in ("cls_token", "pos_embed"):
            return t[..., :E]
        if name == "head.weight":
            return t[:, :E]
        if name == "head.bias":
            return t
        raise KeyError(f"no slicing rule for supernet tensor '{name}'")
    layer, rest = int(m.group(1)), m.group(2)
    if layer >= arch.depth:
        return None
    Q, hidden = arch.qkv_dim(layer, space.head_dim), arch.mlp_dim(layer)
    if rest.startswith(("norm1.", "norm2.")):
        return t[:E]
    if rest == "attn.qkv.weight":  # rows [q; k; v], each of the super QKV width
        return t.view(3, -1, t.shape[-1])[:, :Q, :E].reshape(3 * Q, E)
    if rest == "attn.qkv.bias":
        return t.view(3, -1)[:, :Q].reshape(3 * Q)
    if rest == "attn.proj.weight":
        return t[:E, :Q]
    if rest in ("attn.proj.bias", "mlp.fc2.bias"):
        return t[:E]
    if rest.startswith(("attn.rel_pos_k.", "attn.rel_pos_v.")):
        return t
    if rest == "mlp.fc1.weight":
        return t[:hidden, :E]
    if rest == "mlp.fc1.bias":
        return t[:hidden]
    if rest == "mlp.fc2.weight":
        return t[:E, :hidden]
    raise KeyError(f"no slicing rule for supernet tensor '{name}'")


def slice_state(state: Mapping[str, Tensor], space: ViTSpace, arch: ViTArch) -> dict[str, Tensor]:
    """The subnet's state (timm names, exact shapes) as views into a supernet state."""
    out = {}
    for name, t in state.items():
        s = slice_tensor(name, t, space, arch)
        if s is not None:
            out[name] = s
    return out


class ViTSupernet(ViT):
    """`supernet(x, arch)` runs any architecture of `space` on the shared weights.

    No active-subnet state: the architecture is an argument, so threads may run different
    subnets on one supernet at once.
    """

    def __init__(self, space: ViTSpace, drop_path_rate: float = 0.0) -> None:
        super().__init__(space, space.super_arch(), drop_path_rate)

    def forward(self, x: Tensor, arch: ViTArch | None = None) -> Tensor:  # type: ignore[override]
        arch = self.space.largest_arch() if arch is None else self.space.validate(arch)
        p = slice_state(dict(self.named_parameters()), self.space, arch)
        return vit_forward(p, x, arch, self.space, self.rel_index, self.drop_rates, self.training)

    def extract(self, arch: ViTArch) -> ViT:
        """A standalone `ViT` with copies (not views) of `arch`'s weights, in eval mode."""
        self.space.validate(arch)
        subnet = ViT(self.space, arch).to(next(self.parameters()).device)
        sliced = slice_state(self.state_dict(), self.space, arch)
        subnet.load_state_dict({k: v.clone() for k, v in sliced.items()}, strict=True)
        return subnet.eval()
