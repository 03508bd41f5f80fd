"""A differentiable selector for the MBConv family (`python -m training darts`): DARTS's bi-level search under a
params budget, with GDAS's sampled relaxation so that memory stays one path on a CPU.

- Relaxation: one logit vector per decision `sampling.build_arch` asks that has more than one option (widths,
  depths, ops and each op's kernel, expansion and squeeze-excite). Each step draws every decision by hard
  Gumbel-softmax (straight-through), builds that arch and runs only its path through the supernet, each decision's
  one-hot value multiplied into the forward (`MBConvSupernet.forward(x, arch, gates)`: 1 forward, the gradient to
  the logits backward). The temperature anneals geometrically from `tau_start` to `tau_end` (GDAS: 10 to 0.1).
- Bi-level, first order (DARTS's cheap variant): a weight step (AdamW) on a NAS-train batch, then an architecture
  step (Adam, lr 3e-3, betas (0.5, 0.999), weight decay 1e-3 as DARTS's) on a NAS-validation batch. Both sets are
  disjoint seeded parts of the data's "train" split (`training.data.load_data`, its default held-out validation
  images left out, split seed 0 as `bossnas`); neither the test split nor the validation images are touched.
- Cost: E[params] under the decisions' softmax probabilities, exact (`ExpectedParams`): a block's params depend on
  its op and options and on its input and output widths only, so the expectation is a sum over each block slot of
  P(the slot runs) x E[its params] over (width in, width out, op, kernel, expansion, se), the decisions being drawn
  independently. loss_arch = CE + λ · log(E[params] / target)², target the centre of a params bucket.
- Budgets: one search per bucket of `Buckets.default(space, "params")` (or the given buckets), each from a copy of
  the supernet after `warmup_steps` weight steps on uniformly drawn paths (shared), with fresh logits and the
  bucket's centre as target. Every `eval_every` steps two candidates are scored by their top-1 on the first
  `eval_images` NAS-val images through that search's supernet (batch statistics): the most probable arch (each
  decision's argmax, DARTS's discretisation, which need not lie near E[params]) and the most probable path drawn
  since the last check that lies in the bucket; `preferred.json` keeps the best `top_n` candidates of each bucket,
  whichever search met them.
- Collapse guard (DARTS+'s early stopping): the share of parameter-free choices, a skippable block slot's
  probability of being skipped (its stage's depth at or below its index), is logged with the share of the cheapest
  option over all decisions. A bucket's search stops early when the skip share passes `collapse_share` while
  E[params] is at or under its target: the cost term then pulls towards more blocks, so the rise is the weights'
  own drift to skipping, DARTS's collapse, not the budget's demand.

Writes `preferred.json` (selector "darts", with each search's skip-share history), `logits.json` (each search's
logits at every check) and `darts.png` (skip share and E[params] over the steps, per bucket).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.checks import BATCH, IMAGES, LR, SEED, WEIGHT_DECAY, Range, check_all, check_kinds, write_json
from training.preferred import Buckets, Candidate, pick_preferred, preferred_doc, write_preferred

if TYPE_CHECKING:
    from torch import Tensor

    from zoo.families.mbconv import MBConvArch, MBConvSpace, MBConvSupernet

# torch loads inside the functions: `python -m training darts --help` reads DARTS_RANGES without it
COUNT = Range(int, 1, IMAGES.high)
STEPS = Range(int, 0, 1_000_000)
TAU = Range(float, 0.01, 100)
DARTS_RANGES = {"nas_train": COUNT, "nas_val": COUNT, "batch_size": BATCH, "warmup_steps": STEPS,
                "steps": Range(int, 1, 1_000_000), "weight_lr": LR, "weight_decay": WEIGHT_DECAY, "arch_lr": LR,
                "arch_weight_decay": WEIGHT_DECAY, "cost_weight": Range(float, 0, 1e6), "tau_start": TAU,
                "tau_end": TAU, "collapse_share": Range(float, 0, 1, open_low=True), "eval_every": COUNT,
                "eval_images": COUNT, "top_n": Range(int, 1, 1000), "seed": SEED}
ARCH_BETAS = (0.5, 0.999)  # DARTS's Adam on α
EVAL_CHUNK = 500  # images per forward while scoring a candidate (memory only)


@dataclass
class DartsConfig:
    """The settings of `python -m training darts` (module docstring)."""

    space: str = "mbconv-small"  # a built-in MBConv space or a space file
    data: str = "fashion-mnist"
    buckets: Buckets | None = None  # None: the space's default params buckets
    nas_train: int = 20_000  # images of the train split the weights learn from
    nas_val: int = 10_000  # other images of the train split the logits learn from
    batch_size: int = 64
    warmup_steps: int = 500  # weight steps on uniformly drawn paths before the searches (shared by all buckets)
    steps: int = 500  # per bucket: each a weight step and an architecture step
    weight_lr: float = 2e-3
    weight_decay: float = 0.01
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    cost_weight: float = 1.0  # λ
    tau_start: float = 5.0
    tau_end: float = 0.5
    collapse_share: float = 0.8  # early stop past this skip share (at or under the budget)
    eval_every: int = 50
    eval_images: int = 1_000
    top_n: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_kinds(self)
        check_all(self, DARTS_RANGES)
        if self.buckets is not None and not isinstance(self.buckets, Buckets):
            raise ValueError(f"buckets must be a Buckets or None, got {type(self.buckets).__name__}")
        if self.batch_size > min(self.nas_train, self.nas_val):
            raise ValueError(f"batch_size {self.batch_size} exceeds nas_train {self.nas_train} or nas_val "
                             f"{self.nas_val}: no full batch")
        if self.eval_images > self.nas_val:
            raise ValueError(f"eval_images {self.eval_images} exceeds nas_val {self.nas_val}")


def mbconv_space(name: str) -> MBConvSpace:
    """The MBConv space `name` (built-in or a file); ValueError for another family's."""
    from zoo.family import space_by_name

    family, space = space_by_name(name)
    if family.name != "mbconv":
        raise ValueError(f"space {space.name} is a {family.title} space; `python -m training darts` searches MBConv "
                         f"spaces only")
    return space


# -- decisions and their logits --------------------------------------------------------------------------------------

def decisions(space: MBConvSpace) -> dict[str, tuple]:
    """Every decision `build_arch` can ask that has more than one option, with its options: `build_arch` walked once
    per op position (every stage at full depth, block i taking its stage's i-th op or the last), so every op's own
    decisions are met."""
    from zoo.families.mbconv.sampling import build_arch

    found: dict[str, tuple] = {}
    for k in range(max(len(ops) for ops in space.ops)):
        def choose(name: str, options: tuple, k: int = k) -> Any:
            found[name] = tuple(options)
            if name.endswith(".depth"):
                return options[-1]
            return options[min(k, len(options) - 1)] if name.endswith(".op") else options[0]

        build_arch(space, choose)
    return {name: options for name, options in found.items() if len(options) > 1}


def probabilities(logits: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: v.softmax(0) for name, v in logits.items()}


def sample_path(space: MBConvSpace, logits: dict[str, Tensor], tau: float) -> tuple[MBConvArch, dict[str, Tensor],
                                                                                 float]:
    """An arch drawn by hard Gumbel-softmax per decision, each drawn decision's one-hot value (the gates), and the
    arch's log-probability under the logits."""
    import torch.nn.functional as F

    from zoo.families.mbconv.sampling import build_arch

    gates, logp = {}, [0.0]

    def choose(name: str, options: tuple) -> Any:
        if name not in logits:  # one option
            return options[0]
        hard = F.gumbel_softmax(logits[name], tau=tau, hard=True)
        k = int(hard.argmax())
        gates[name] = hard[k]
        logp[0] += float(logits[name].detach().log_softmax(0)[k])
        return options[k]

    return build_arch(space, choose), gates, logp[0]


def policy_of(space: MBConvSpace, logits: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Logits as `logits.json` stores them, as a policy: per decision, each option's probability (the form of
    ENAS's `Controller.probabilities`, which `training.search.log_probability` reads)."""
    names = decisions(space)
    policy = {}
    for name, values in logits.items():
        top = max(values)
        weights = [math.exp(v - top) for v in values]
        policy[name] = {str(o): w / sum(weights) for o, w in zip(names[name], weights, strict=True)}
    return policy


def search_for(searches: list[dict], params: int) -> dict:
    """The `logits.json` search whose bucket holds `params`, else the one whose target is nearest (in ratio)."""
    holding = [s for s in searches if s["low"] <= params < s["high"]]
    return holding[0] if holding else min(searches, key=lambda s: abs(math.log(params / s["target"])))


def most_probable(space: MBConvSpace, logits: dict[str, Tensor]) -> MBConvArch:
    """Each decision's argmax (DARTS's discretisation)."""
    from zoo.families.mbconv.sampling import build_arch

    return build_arch(space, lambda name, options: options[int(logits[name].argmax())] if name in logits
                      else options[0])


# -- the expected cost -----------------------------------------------------------------------------------------------

class ExpectedParams:
    """E[params] of the arch drawn from independent per-decision probabilities, exactly: the stem, plus per block
    slot P(it runs) x its params averaged over (input width, output width, op, kernel, expansion, se), plus the
    head averaged over the last width. The block tables are the closed-form `block_cost` of every combination."""

    def __init__(self, space: MBConvSpace) -> None:
        import torch

        from zoo.families.mbconv.layers import head_cost, layers_cost, stem_layers

        self.space = space
        self.stem = float(layers_cost(stem_layers(space))[0])
        self.head = torch.tensor([float(head_cost(space, w)[0]) for w in space.widths[-1]], dtype=torch.float64)
        self.tables = {(s, i, op): self._table(s, i, op)  # (stage, index, op) -> [width pairs, k, e, se] params
                       for s, depth in enumerate(space.depths) for i in range(depth) for op in space.ops[s]}

    def _table(self, s: int, i: int, op: str) -> Tensor:
        import torch

        from zoo.families.mbconv.layers import Placed, block_cost
        from zoo.families.mbconv.space import Block

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

    def __call__(self, probs: dict[str, Tensor]) -> Tensor:
        import torch

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

    def cheapest(self, names: dict[str, tuple]) -> dict[str, int]:
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


def skip_share(space: MBConvSpace, probs: dict[str, Tensor]) -> float:
    """The mean probability of a skippable block slot (index >= 1) being skipped: its stage's depth <= its index."""
    shares = [float(probs[f"stage{s}.depth"][:i].sum()) for s, depth in enumerate(space.depths)
              for i in range(1, depth)]
    return sum(shares) / len(shares) if shares else 0.0


def cheap_share(probs: dict[str, Tensor], cheapest: dict[str, int]) -> float:
    """The mean probability of each decision's cheapest option."""
    return sum(float(probs[n][k]) for n, k in cheapest.items()) / max(len(cheapest), 1)


# -- data ------------------------------------------------------------------------------------------------------------

@dataclass
class NasData:
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor


def nas_data(cfg: DartsConfig, space: MBConvSpace) -> NasData:
    """NAS-train and NAS-val: disjoint parts of a seeded permutation of the train split (never test, never the
    held-out validation images)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from training.data import load_data

    train, _ = load_data(cfg.data, "train", img_size=space.img_size, in_chans=space.in_chans, seed=0)
    if cfg.nas_train + cfg.nas_val > len(train):
        raise ValueError(f"nas_train {cfg.nas_train} + nas_val {cfg.nas_val} exceed the {len(train)} images of "
                         f"{cfg.data}'s train split")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    load = lambda idx: next(iter(DataLoader(Subset(train, idx.tolist()), batch_size=len(idx))))
    (x, y), (vx, vy) = load(order[:cfg.nas_train]), load(order[cfg.nas_train:cfg.nas_train + cfg.nas_val])
    return NasData(x, y, vx, vy)


def batches(x: Tensor, y: Tensor, size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Full batches of seeded epochs, for ever."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=generator)
        for k in range(0, len(x) - size + 1, size):
            idx = order[k:k + size]
            yield x[idx], y[idx]


# -- the search ------------------------------------------------------------------------------------------------------

def weight_step(net: MBConvSupernet, opt, arch: MBConvArch, batch: tuple[Tensor, Tensor]) -> None:
    import torch.nn.functional as F

    x, y = batch
    loss = F.cross_entropy(net(x, arch), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def top1(net: MBConvSupernet, arch: MBConvArch, x: Tensor, y: Tensor) -> float:
    """Top-1 (%) of `arch` through the supernet, with batch statistics (the supernet's own fit no path)."""
    import torch

    with torch.no_grad():
        hits = sum(int((net(x[k:k + EVAL_CHUNK], arch).argmax(1) == y[k:k + EVAL_CHUNK]).sum())
                   for k in range(0, len(x), EVAL_CHUNK))
    return 100.0 * hits / len(x)


@dataclass
class BucketSearch:
    """One bucket's search: its history (one row per check) and the candidates it met."""

    low: float
    high: float
    target: float
    history: list[dict]
    logits: list[dict]
    candidates: list[Candidate]
    stopped_at: int | None


def search_bucket(cfg: DartsConfig, space: MBConvSpace, warm: MBConvSupernet, data: NasData, cost: ExpectedParams,
                  names: dict[str, tuple], low: float, high: float, progress: bool) -> BucketSearch:
    """Alternate weight and architecture steps towards the bucket's centre from a copy of the warmed supernet."""
    import copy

    import torch
    import torch.nn.functional as F

    from zoo.families.mbconv.layers import flops, params

    net = copy.deepcopy(warm).train()
    logits = {name: torch.zeros(len(options), requires_grad=True) for name, options in names.items()}
    w_opt = torch.optim.AdamW(net.parameters(), lr=cfg.weight_lr, weight_decay=cfg.weight_decay)
    a_opt = torch.optim.Adam(logits.values(), lr=cfg.arch_lr, betas=ARCH_BETAS, weight_decay=cfg.arch_weight_decay)
    target = (low + high) / 2
    cheapest = cost.cheapest(names)
    train = batches(data.train_x, data.train_y, cfg.batch_size, cfg.seed + 1)
    val = batches(data.val_x, data.val_y, cfg.batch_size, cfg.seed + 2)
    eval_x, eval_y = data.val_x[:cfg.eval_images], data.val_y[:cfg.eval_images]
    out = BucketSearch(low, high, target, [], [], [], None)
    in_bucket: tuple[float, MBConvArch] | None = None  # the most probable drawn path in the bucket since the last check
    for step in range(1, cfg.steps + 1):
        tau = cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** ((step - 1) / max(cfg.steps - 1, 1))
        with torch.no_grad():
            arch, _, logp = sample_path(space, logits, tau)
        weight_step(net, w_opt, arch, next(train))
        if low <= params(space, arch) < high and (in_bucket is None or logp > in_bucket[0]):
            in_bucket = logp, arch
        arch, gates, _ = sample_path(space, logits, tau)
        x, y = next(val)
        loss = F.cross_entropy(net(x, arch, gates), y) + cfg.cost_weight * torch.log(cost(probabilities(logits)) /
                                                                                     target) ** 2
        grads = torch.autograd.grad(loss, list(logits.values()), allow_unused=True)
        for v, g in zip(logits.values(), grads, strict=True):
            v.grad = torch.zeros_like(v) if g is None else g
        a_opt.step()
        if step % cfg.eval_every and step != cfg.steps:
            continue
        with torch.no_grad():
            probs = probabilities(logits)
            expected, skip = float(cost(probs)), skip_share(space, probs)
        best = most_probable(space, logits)
        for a in dict.fromkeys([best, *([in_bucket[1]] if in_bucket else [])]):
            out.candidates.append(Candidate(a, params(space, a), flops(space, a), top1(net, a, eval_x, eval_y)))
        in_bucket = None
        out.history.append({"step": step, "tau": round(tau, 4), "expected_params": round(expected, 1),
                            "skip_share": round(skip, 4), "cheap_share": round(cheap_share(probs, cheapest), 4),
                            "argmax": best.id, "argmax_params": params(space, best)})
        out.logits.append({"step": step, "logits": {n: [round(t, 4) for t in v.detach().tolist()]
                                                    for n, v in logits.items()}})
        if progress:
            print(f"  step {step}: E[params] {expected:,.0f} (target {target:,.0f}), skip share {skip:.2f}, "
                  f"argmax {best.id} ({params(space, best):,} params)", flush=True)
        if skip > cfg.collapse_share and expected <= target:
            out.stopped_at = step
            break
    return out


def warm_up(cfg: DartsConfig, space: MBConvSpace, data: NasData) -> MBConvSupernet:
    """The supernet after `warmup_steps` weight steps on uniformly drawn paths (OFA's sampling)."""
    import random

    import torch

    from zoo.families.mbconv import MBConvSupernet
    from zoo.families.mbconv.sampling import random_arch

    torch.manual_seed(cfg.seed)
    net = MBConvSupernet(space).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.weight_lr, weight_decay=cfg.weight_decay)
    rng, train = random.Random(cfg.seed), batches(data.train_x, data.train_y, cfg.batch_size, cfg.seed)
    for _ in range(cfg.warmup_steps):
        weight_step(net, opt, random_arch(space, rng), next(train))
    return net


def reachable(space: MBConvSpace, low: float, high: float) -> bool:
    from zoo.families.mbconv.sampling import cost_range

    (lo, hi), _ = cost_range(space)
    return low <= hi and high > lo


def darts(cfg: DartsConfig, out: str | Path, progress: bool = True) -> Path:
    """Search every reachable bucket; write preferred.json, logits.json and darts.png into `out`; returns the
    preferred.json path."""
    import torch

    space = mbconv_space(cfg.space)
    buckets = cfg.buckets or Buckets.default(space, "params")
    start = time.perf_counter()
    data = nas_data(cfg, space)  # first: a data source it cannot read leaves no folder behind
    warm = warm_up(cfg, space, data)
    warm_s = time.perf_counter() - start
    cost, names = ExpectedParams(space), decisions(space)
    searches = []
    for k, (low, high) in enumerate(buckets.edges()):
        if not reachable(space, low, high):
            continue
        if progress:
            print(f"bucket [{low:,.0f}, {high:,.0f}) params:", flush=True)
        torch.manual_seed(cfg.seed * 1000 + k)
        searches.append(search_bucket(cfg, space, warm, data, cost, names, low, high, progress))
    selector = {"method": "darts", "relaxation": "hard Gumbel-softmax per decision (GDAS), one path per step",
                "cost": "exact E[params] under the decisions' probabilities; penalty λ·log(E/target)², target "
                        "the bucket's centre",
                "collapse_guard": f"early stop past skip share {cfg.collapse_share} at or under the target",
                "fitness": f"NAS-val top-1 (%) on {cfg.eval_images} images of the train split, through the "
                           f"search's supernet with batch statistics",
                **{k: v for k, v in asdict(cfg).items() if k != "buckets"},
                "bucket_by": "params", "buckets": asdict(buckets),
                "searches": [{"low": s.low, "high": s.high, "target": s.target, "stopped_at": s.stopped_at,
                              "skip_share": [[h["step"], h["skip_share"]] for h in s.history]} for s in searches]}
    candidates = [c for s in searches for c in s.candidates]
    stats = {"archs_scored": len(candidates),
             "seconds": {"warmup": round(warm_s, 1), "search": round(time.perf_counter() - start - warm_s, 1)}}
    doc = preferred_doc(space, selector, stats, buckets, pick_preferred(candidates, buckets, "params", cfg.top_n),
                        family="mbconv")
    path = write_preferred(doc, out)
    write_json(Path(out) / "logits.json", {"schema_version": 1, "kind": "prezoo.darts-logits", "space": space.name,
                                           "searches": [{"low": s.low, "high": s.high, "target": s.target,
                                                         "history": s.history, "logits": s.logits}
                                                        for s in searches]})
    plot_search(space, searches, Path(out) / "darts.png")
    return path


def plot_search(space: MBConvSpace, searches: list[BucketSearch], path: Path) -> Path:
    """Per bucket: the skip share and E[params] (its target dashed) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.io import atomic_write_figure

    fig, (share, cost) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for s in searches:
        steps = [h["step"] for h in s.history]
        label = f"[{s.low:,.0f}, {s.high:,.0f})"
        share.plot(steps, [h["skip_share"] for h in s.history], marker=".", label=label)
        line, = cost.plot(steps, [h["expected_params"] for h in s.history], marker=".")
        cost.axhline(s.target, color=line.get_color(), ls="--", lw=0.8)
    share.set(xlabel="step", ylabel="share of skipped block slots", ylim=(0, 1))
    cost.set(xlabel="step", ylabel="E[params] (target dashed)", yscale="log")
    share.legend(fontsize=7, title="params bucket", title_fontsize=7)
    fig.suptitle(f"{space.name}: DARTS (GDAS sampling) per params bucket", fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write_figure(path, fig)
    finally:
        plt.close(fig)
