"""Zero-cost selection (PreNAS): from a search space to one preferred architecture per bucket.

1. One forward/backward pass of a randomly initialised supernet at the space's largest arch.
2. Score tables from θ and g, built once with the supernet's own slicing rules: per layer the
   proxy's cumulative score of the first h heads / r MLP units (step 1), and plain-SNIP sums per
   (layer, embed, heads, ratio) and per embed (step 2). Any subnet's score is then arithmetic.
3. Step 1: per isomer group (embed, depth, total head steps, total MLP steps), the paper's
   Algorithm 1 picks the representative: add one unit at a time to the layer whose next unit
   scores highest. One greedy run per depth yields the representative of every total at once.
4. Step 2: plain SNIP over the inherited slices ranks representatives inside each cost bucket;
   the top N per bucket are the preferred archs, written to `preferred.json` (`training.preferred`) with
   selector: {proxy, seed, batch_size, data, bucket_by, buckets, top_n, step1_embed}, stats: {representatives,
   seconds}, and plain SNIP as the score.

It serves the ViT family (the selector "select" of `zoo.families.vit`): its tables are built with the ViT
supernet's slicing rules.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from training.checks import check_all
from training.config import SELECT_RANGES
from training.preferred import BUCKET_BY, Buckets, Candidate, pick_preferred, preferred_doc, write_preferred
from training.proxies import get_proxy
from zoo.families.vit.arch import ViTArch
from zoo.families.vit.cost import flops, params
from zoo.families.vit.space import ViTSpace
from zoo.families.vit.supernet import ViTSupernet, slice_tensor
from zoo.family import Space

# Step 2 leaves out tensors whose size does not depend on the choices being ranked within an
# embed width (as the official code does): class token, position embedding, relative-position tables.
STEP2_EXCLUDED = ("cls_token", "pos_embed", "rel_pos_")


@dataclass
class SelectConfig:
    space: ViTSpace
    proxy: str = "snip-normalised"
    seed: int = 0
    batch_size: int = 64
    data: str = "gaussian"
    bucket_by: str = "params"
    buckets: Buckets | None = None
    top_n: int = 1
    chunk: int = 16  # images per forward/backward (memory); the gradient is their sum either way
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.space, ViTSpace):
            raise ValueError(f"PreNAS's zero-cost selector searches a ViT space, got {type(self.space).__name__}")
        get_proxy(self.proxy)
        if self.bucket_by not in BUCKET_BY:
            raise ValueError(f"bucket_by must be one of {sorted(BUCKET_BY)}, got {self.bucket_by!r}")
        check_all(self, SELECT_RANGES)
        if self.buckets is None:
            self.buckets = Buckets.default(self.space, self.bucket_by)


# -- 1. the gradient pass ------------------------------------------------------------------------
def gaussian_batch(space: Space, n: int, generator: torch.Generator) -> Tensor:
    """Data-free input (official recipe): channel c ~ N(mean_c, std_c), ImageNet stats for RGB."""
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if space.in_chans == 3 else \
        ((0.5,) * space.in_chans, (0.25,) * space.in_chans)
    x = torch.randn(n, space.in_chans, space.img_size, space.img_size, generator=generator)
    return x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def gradient_pass(space: ViTSpace, seed: int, batch: tuple[Tensor, Tensor | None],
                  chunk: int = 16, progress: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """θ and g of a random supernet after one pass at the largest arch, in train mode (drop path
    0.1 active, as officially). Loss: sum of logits without labels, else summed cross-entropy."""
    torch.manual_seed(seed)
    supernet = ViTSupernet(space, drop_path_rate=0.1).train()
    arch = space.largest_arch()
    x, y = batch
    for start in tqdm(range(0, len(x), chunk), desc="gradient pass", unit="chunk", disable=not progress):
        logits = supernet(x[start:start + chunk], arch)
        loss = logits.sum() if y is None else F.cross_entropy(logits, y[start:start + chunk], reduction="sum")
        loss.backward()
    theta = {k: p.detach() for k, p in supernet.named_parameters()}
    grad = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
            for k, p in supernet.named_parameters()}
    return theta, grad


# -- 2. score tables -----------------------------------------------------------------------------
def _uniform(space: ViTSpace, embed: int, heads: int, ratio: float) -> ViTArch:
    d = space.super_depth
    return ViTArch(embed, d, (heads,) * d, (ratio,) * d)


@dataclass
class ScoreTables:
    """Everything the selector needs from θ and g, as small tensors.

    heads[l, j] / mlp[l, j]: the step-1 proxy's cumulative score of layer l at its j-th head /
    ratio choice (scored at the largest embed, as officially). block[l, e, j, k]: plain SNIP of
    layer l at embed e, heads j, ratio k. outer[e]: plain SNIP of patch embed, final norm, head.
    """

    space: ViTSpace
    heads: Tensor
    mlp: Tensor
    block: Tensor
    outer: Tensor

    def step2_scores(self, e: int, head_idx: Tensor, ratio_idx: Tensor) -> Tensor:
        """Plain SNIP of every (head allocation, ratio allocation) pair: shape (n_heads, n_ratios)."""
        depth = head_idx.shape[1]
        layers = torch.arange(depth)
        per_layer = self.block[layers[None, None, :], e, head_idx[:, None, :], ratio_idx[None, :, :]]
        return self.outer[e] + per_layer.sum(-1)


def _snip(theta: Tensor, grad: Tensor) -> tuple[Tensor, float]:
    """|θ ⊙ g| with g scaled by a power of two (exact), and the factor that undoes it.

    At init many θ·g products fall below float32's normal range, and subnormal arithmetic is
    ~20x slower on x86; flushing them to zero would change scores, float64 doubles the traffic.
    """
    top = float(grad.abs().max())
    if top == 0.0:
        return torch.zeros_like(theta), 1.0
    k = -math.floor(math.log2(top))  # max |g · 2^k| lies in [1, 2)
    return (theta * (grad * 2.0**k)).abs(), 2.0**-k


def step1_region(matrix: str, t: Tensor, e_max: int) -> Tensor:
    """What step 1's proxy normalises over, as the official code does: the largest searched embed's part of the
    embed axis and *every* super row of the other axis (all 1,024 MLP rows of Tiny's 256-wide supernet, not the
    ⌊240·4⌋ = 960 that the largest searched arch uses)."""
    return t[:e_max] if matrix == "mlp.fc2.weight" else t[:, :e_max]


def build_tables(space: ViTSpace, theta: dict[str, Tensor], grad: dict[str, Tensor], proxy: str) -> ScoreTables:
    score_fn = get_proxy(proxy)
    D, E_max = space.super_depth, max(space.embed_dims)
    heads = torch.zeros(D, len(space.num_heads), dtype=torch.float64)
    mlp = torch.zeros(D, len(space.mlp_ratios), dtype=torch.float64)
    for layer in range(D):
        for matrix, table, choices in (("attn.qkv.weight", heads, space.num_heads),
                                       ("mlp.fc1.weight", mlp, space.mlp_ratios),
                                       ("mlp.fc2.weight", mlp, space.mlp_ratios)):
            name = f"blocks.{layer}.{matrix}"
            t, g = (step1_region(matrix, x[name], E_max).double() for x in (theta, grad))  # see _snip
            s = score_fn(t, g)
            for j, c in enumerate(choices):
                arch = _uniform(space, E_max, c, space.mlp_ratios[0]) if table is heads else \
                    _uniform(space, E_max, space.num_heads[0], c)
                table[layer, j] += slice_tensor(name, s, space, arch).sum()
    # Step 2: plain SNIP sums per (layer, embed, heads, ratio) and per embed. A prefix slice is
    # identified by its shape, so each distinct slice of a tensor is summed once.
    snip = {k: _snip(theta[k], grad[k]) for k in theta if not any(x in k for x in STEP2_EXCLUDED)}
    block = torch.zeros(D, len(space.embed_dims), len(space.num_heads), len(space.mlp_ratios), dtype=torch.float64)
    outer = torch.zeros(len(space.embed_dims), dtype=torch.float64)
    sums: dict[tuple[str, torch.Size], float] = {}
    for e, E in enumerate(space.embed_dims):
        for (j, h), (k, r) in itertools.product(enumerate(space.num_heads), enumerate(space.mlp_ratios)):
            arch = _uniform(space, E, h, r)
            for name, (s, unscale) in snip.items():
                part = slice_tensor(name, s, space, arch)
                key = (name, part.shape)
                if key not in sums:
                    sums[key] = float(part.sum()) * unscale
                if name.startswith("blocks."):
                    block[int(name.split(".")[1]), e, j, k] += sums[key]
                elif j == 0 and k == 0:
                    outer[e] += sums[key]
    return ScoreTables(space, heads, mlp, block, outer)


# -- 3. isomer representatives (Algorithm 1) -----------------------------------------------------
def greedy_allocations(prefix: Tensor) -> list[tuple[int, ...]]:
    """Choice index per layer for every total number of unit steps 0..L·(K-1).

    `prefix` (L, K): cumulative score of each layer at each choice. Each step adds one unit to
    the layer whose next unit has the highest marginal score (layers at the top choice are full).
    """
    L, K = prefix.shape
    idx = [0] * L
    out = [tuple(idx)]
    for _ in range(L * (K - 1)):
        gains = [prefix[layer, idx[layer] + 1] - prefix[layer, idx[layer]] if idx[layer] < K - 1 else -math.inf
                 for layer in range(L)]
        best = max(range(L), key=lambda layer: gains[layer])  # ties: the lowest layer
        idx[best] += 1
        out.append(tuple(idx))
    return out


def brute_force_allocation(prefix: Tensor, total: int) -> tuple[tuple[int, ...], float]:
    """The allocation with `total` unit steps that maximises the summed score (exhaustive)."""
    L, K = prefix.shape
    best, best_score = None, -math.inf
    for idx in itertools.product(range(K), repeat=L):
        if sum(idx) == total:
            score = float(sum(prefix[layer, i] for layer, i in enumerate(idx)))
            if score > best_score:
                best, best_score = idx, score
    return best, best_score


def representatives(tables: ScoreTables, progress: bool = False) -> Iterator[Candidate]:
    """Every isomer group's representative with its step-2 score."""
    space = tables.space
    groups = list(itertools.product(enumerate(space.embed_dims), space.depths))
    for (e, E), L in tqdm(groups, desc="scoring", unit="group", disable=not progress):
        head_alloc = greedy_allocations(tables.heads[:L])
        mlp_alloc = greedy_allocations(tables.mlp[:L])
        scores = tables.step2_scores(e, torch.tensor(head_alloc), torch.tensor(mlp_alloc))
        for (a, hi), (b, ri) in itertools.product(enumerate(head_alloc), enumerate(mlp_alloc)):
            arch = ViTArch(E, L, tuple(space.num_heads[i] for i in hi), tuple(space.mlp_ratios[i] for i in ri))
            yield Candidate(arch, params(space, arch), flops(space, arch), float(scores[a, b]))


# -- 4. buckets, top-N, output -------------------------------------------------------------------
@dataclass
class Selection:
    config: SelectConfig
    candidates: list[Candidate]
    preferred: list[list[Candidate]]  # per bucket, best first
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        cfg = self.config
        selector = {"proxy": cfg.proxy, "seed": cfg.seed, "batch_size": cfg.batch_size, "data": cfg.data,
                    "bucket_by": cfg.bucket_by, "buckets": asdict(cfg.buckets), "top_n": cfg.top_n,
                    "step1_embed": max(cfg.space.embed_dims)}
        return preferred_doc(cfg.space, selector, {"representatives": len(self.candidates), "seconds": self.seconds},
                             cfg.buckets, self.preferred)

    @property
    def preferred_archs(self) -> list[Candidate]:
        return [c for best in self.preferred for c in best]


def input_batch(space: Space, data: str, batch_size: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """The selector's one batch: `data` "gaussian" (data-free, no labels) or a seeded draw from a dataset's train
    split, with its labels."""
    generator = torch.Generator().manual_seed(seed)
    if data == "gaussian":
        return gaussian_batch(space, batch_size, generator), None
    from training.data import load_data

    dataset, _ = load_data(data, "train", img_size=space.img_size, in_chans=space.in_chans, seed=seed)
    idx = torch.randperm(len(dataset), generator=generator)[:batch_size]
    xs, ys = zip(*(dataset[int(i)] for i in idx), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def select(cfg: SelectConfig) -> Selection:
    seconds = {}
    t0 = time.perf_counter()
    batch = input_batch(cfg.space, cfg.data, cfg.batch_size, cfg.seed)
    theta, grad = gradient_pass(cfg.space, cfg.seed, batch, cfg.chunk, cfg.progress)
    seconds["gradient_pass"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    tables = build_tables(cfg.space, theta, grad, cfg.proxy)
    seconds["tables"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    candidates = list(representatives(tables, cfg.progress))
    preferred = pick_preferred(candidates, cfg.buckets, cfg.bucket_by, cfg.top_n)
    seconds["representatives_and_buckets"] = time.perf_counter() - t2
    seconds["scoring_total"] = seconds["tables"] + seconds["representatives_and_buckets"]
    seconds["total"] = time.perf_counter() - t0
    return Selection(cfg, candidates, preferred, seconds)


def write_selection(sel: Selection, out_dir: str | Path) -> Path:
    return write_preferred(sel.to_dict(), out_dir)


def run(cfg: SelectConfig, out: str | Path, plot: bool = True) -> Path:
    """The command's work: select, print the table, write preferred.json (and the plot)."""
    from training.report import plot_selection, selection_table

    sel = select(cfg)
    print(selection_table(sel))
    path = write_selection(sel, out)
    print(f"\nwrote {path}")
    if plot:
        print(f"wrote {plot_selection(sel, Path(out) / 'preferred.png')}")
    return path
