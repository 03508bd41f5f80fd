"""What DARTS's relaxation needs of the MBConv family (`zoo.family.Relaxation`): every decision `sampling.build_arch`
asks with its options, E[params] under independent per-decision probabilities in closed form, and the skip share
(a skipped block slot is MBConv's parameter-free choice)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from zoo.families.mbconv.layers import Placed, block_cost, head_cost, layers_cost, stem_layers
from zoo.families.mbconv.sampling import build_arch
from zoo.families.mbconv.space import Block, MBConvSpace


def decisions(space: MBConvSpace) -> dict[str, tuple]:
    """Every decision `build_arch` can ask that has more than one option, with its options: `build_arch` walked once
    per op position (every stage at full depth, block i taking its stage's i-th op or the last), so every op's own
    decisions are met."""
    found: dict[str, tuple] = {}
    for k in range(max(len(ops) for ops in space.ops)):
        def choose(name: str, options: tuple, k: int = k) -> Any:
            found[name] = tuple(options)
            if name.endswith(".depth"):
                return options[-1]
            return options[min(k, len(options) - 1)] if name.endswith(".op") else options[0]

        build_arch(space, choose)
    return {name: options for name, options in found.items() if len(options) > 1}


class ExpectedParams:
    """E[params] of the arch drawn from independent per-decision probabilities, exactly: the stem, plus per block
    slot P(it runs) x its params averaged over (input width, output width, op, kernel, expansion, se), plus the
    head averaged over the last width. The block tables are the closed-form `block_cost` of every combination."""

    def __init__(self, space: MBConvSpace) -> None:
        self.space = space
        self.stem = float(layers_cost(stem_layers(space))[0])
        self.head = torch.tensor([float(head_cost(space, w)[0]) for w in space.widths[-1]], dtype=torch.float64)
        self.tables = {(s, i, op): self._table(s, i, op)  # (stage, index, op) -> [width pairs, k, e, se] params
                       for s, depth in enumerate(space.depths) for i in range(depth) for op in space.ops[s]}

    def _table(self, s: int, i: int, op: str) -> Tensor:
        space = self.space
        kernels, expansions, ses = space.block_options(op)
        side_in = space.resolution(s) if i else space.img_size if s == 0 else space.resolution(s - 1)
        cost = lambda c_in, c_out, b: block_cost(Placed(s, i, b, c_in, c_out, 1 if i else space.strides[s], side_in,
                                                        space.resolution(s), space.se_reduction))[0]
        return torch.tensor([[[[float(cost(c_in, c_out, Block(op, k, e, se))) for se in ses] for e in expansions]
                              for k in kernels] for c_in, c_out in self.width_pairs(s, i)], dtype=torch.float64)

    def width_pairs(self, s: int, i: int) -> list[tuple[int, int]]:
        """A slot's (input, output) widths in the order `pair_probs` weighs them."""
        space = self.space
        if i > 0:
            return [(w, w) for w in space.widths[s]]
        ins = (space.stem_channels,) if s == 0 else space.widths[s - 1]
        return [(a, b) for a in ins for b in space.widths[s]]

    def __call__(self, probs: Mapping[str, Tensor]) -> Tensor:
        p = lambda name, n: probs[name].double() if name in probs else torch.ones(n, dtype=torch.float64) / n
        total = self.stem + (p(f"stage{len(self.space.depths) - 1}.width", len(self.head)) * self.head).sum()
        for s, depth in enumerate(self.space.depths):
            width = p(f"stage{s}.width", len(self.space.widths[s]))
            for i in range(depth):
                pairs = width if i > 0 or s == 0 else \
                    torch.outer(p(f"stage{s - 1}.width", len(self.space.widths[s - 1])), width).flatten()
                runs = p(f"stage{s}.depth", depth)[i:].sum()
                ops = p(f"stage{s}.block{i}.op", len(self.space.ops[s]))
                for o, op in enumerate(self.space.ops[s]):
                    table = self.tables[s, i, op]
                    where = f"stage{s}.block{i}.{op}"
                    k, e, se = (p(f"{where}.{d}", n) for d, n in zip(("kernel", "expansion", "se"), table.shape[1:],
                                                                      strict=True))
                    total = total + runs * ops[o] * torch.einsum("w,k,e,s,wkes->", pairs, k, e, se, table)
        return total

    def cheapest(self, names: Mapping[str, tuple]) -> dict[str, int]:
        """Each decision's cheapest option: the first (widths, depths, kernels and expansions ascend; se is False
        first), for an op the one of fewest params at the slot's narrowest widths and smallest options."""
        out = {}
        for name in names:
            stage, block, *rest = name.split(".")
            if rest == ["op"]:
                s, i = int(stage.removeprefix("stage")), int(block.removeprefix("block"))
                costs = [float(self.tables[s, i, op][0, 0, 0, 0]) for op in self.space.ops[s]]
                out[name] = costs.index(min(costs))
            else:
                out[name] = 0
        return out


def skip_share(space: MBConvSpace, probs: Mapping[str, Tensor]) -> float:
    """The mean probability of a skippable block slot (index >= 1) being skipped: its stage's depth <= its index."""
    shares = [float(probs[f"stage{s}.depth"][:i].sum()) for s, depth in enumerate(space.depths)
              for i in range(1, depth)]
    return sum(shares) / len(shares) if shares else 0.0
