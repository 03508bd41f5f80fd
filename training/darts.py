"""A differentiable selector (`python -m training darts`) for the families whose archs are built from named
decisions (`zoo.family.Relaxation`: MBConv, HyTra): DARTS's bi-level search under a params budget, with GDAS's
sampled relaxation so that memory stays one path on a CPU.

- Relaxation: one logit vector per decision the family's `build_arch` asks that has more than one option (MBConv:
  widths, depths, ops and each op's kernel, expansion and squeeze-excite; HyTra: each layer's scale and op, one
  decision per reachable input scale). Each step draws every decision by hard Gumbel-softmax (straight-through),
  builds that arch and runs only its path through the supernet, each decision's one-hot value multiplied into the
  forward (`supernet(x, arch, gates)`: 1 forward, the gradient to the logits backward). The temperature anneals
  geometrically from `tau_start` to `tau_end` (GDAS: 10 to 0.1).
- Bi-level, first order (DARTS's cheap variant): a weight step (AdamW) on a NAS-train batch, then an architecture
  step (Adam, lr 3e-3, betas (0.5, 0.999), weight decay 1e-3 as DARTS's) on a NAS-validation batch. Both sets are
  disjoint seeded parts of the data's "train" split (`training.data.load_data`, its default held-out validation
  images left out, split seed 0 as `bossnas`); neither the test split nor the validation images are touched.
- Cost: E[params] under the decisions' softmax probabilities, exact (the family's `ExpectedParams`; MBConv: a
  block's params depend on its op and options and on its input and output widths only, so the expectation is a sum
  over each block slot of P(the slot runs) x E[its params]; HyTra: a layer's on its input and output scales and op,
  and the scales along a path are a Markov chain), the decisions being drawn independently. loss_arch = CE + λ ·
  log(E[params] / target)², target the centre of a params bucket.
- Budgets: one search per bucket of `Buckets.default(space, "params")` (or the given buckets), each from a copy of
  the supernet after `warmup_steps` weight steps on paths drawn by the family's `random_arch` (shared), with fresh
  logits and the bucket's centre as target. Every `eval_every` steps two candidates are scored by their top-1 on
  the first `eval_images` NAS-val images through that search's supernet (batch statistics): the most probable arch
  (each decision's argmax, DARTS's discretisation, which need not lie near E[params]) and the most probable path
  drawn since the last check that lies in the bucket; `preferred.json` keeps the best `top_n` candidates of each
  bucket, whichever search met them.
- Collapse guard (DARTS+'s early stopping): the share of parameter-free choices (`free_share`; MBConv: a skippable
  block slot's probability of being skipped) is logged with the share of the cheapest option over all decisions. A
  bucket's search stops early when the free share passes `collapse_share` while E[params] is at or under its
  target: the cost term then pulls towards more blocks, so the rise is the weights' own drift to skipping, DARTS's
  collapse, not the budget's demand. HyTra has no parameter-free choice (every layer runs a ResConv or a ResAtt), so
  nothing can collapse that way there and its searches run their steps; the cheap share is logged all the same.

Writes `preferred.json` (selector "darts", with each search's free-share history), `logits.json` (each search's
logits at every check) and `darts.png` (the free share, else the cheap share, and E[params] over the steps, per
bucket).
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
from zoo.family import FAMILIES, get_family, space_by_name

if TYPE_CHECKING:
    from torch import Tensor

    from zoo.family import Arch, ExpectedParams, Family, Space, Supernet

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

    space: str = "mbconv-small"  # a built-in MBConv or HyTra space, or a space file
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
    collapse_share: float = 0.8  # early stop past this free share (at or under the budget)
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


def relaxed_space(name: str) -> tuple[Family, Space]:
    """The space `name` (built-in or a file) and its family; ValueError for a family DARTS cannot relax."""
    family, space = space_by_name(name)
    if family.relaxation is None or family.build_arch is None:
        raise ValueError(f"space {space.name} is a {family.title} space; `python -m training darts` searches the "
                         f"families whose archs are built from named decisions: {', '.join(relaxable())}")
    return family, space


def relaxable() -> list[str]:
    return [name for name, f in FAMILIES.items() if f.relaxation is not None and f.build_arch is not None]


# -- decisions and their logits --------------------------------------------------------------------------------------

def decisions(space: Space) -> dict[str, tuple]:
    """Every decision of the space's family with more than one option, with its options."""
    return get_family(space.family).relaxation.decisions(space)


def probabilities(logits: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: v.softmax(0) for name, v in logits.items()}


def sample_path(space: Space, logits: dict[str, Tensor], tau: float) -> tuple[Arch, dict[str, Tensor], float]:
    """An arch drawn by hard Gumbel-softmax per decision, each drawn decision's one-hot value (the gates), and the
    arch's log-probability under the logits."""
    import torch.nn.functional as F

    gates, logp = {}, [0.0]

    def choose(name: str, options: tuple) -> Any:
        if name not in logits:  # one option
            return options[0]
        hard = F.gumbel_softmax(logits[name], tau=tau, hard=True)
        k = int(hard.argmax())
        gates[name] = hard[k]
        logp[0] += float(logits[name].detach().log_softmax(0)[k])
        return options[k]

    return get_family(space.family).build_arch(space, choose), gates, logp[0]


def policy_of(space: Space, logits: dict[str, list[float]]) -> dict[str, dict[str, float]]:
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


def most_probable(space: Space, logits: dict[str, Tensor]) -> Arch:
    """Each decision's argmax (DARTS's discretisation)."""
    return get_family(space.family).build_arch(
        space, lambda name, options: options[int(logits[name].argmax())] if name in logits else options[0])


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


def nas_data(cfg: DartsConfig, space: Space) -> NasData:
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

def weight_step(net: Supernet, opt, arch: Arch, batch: tuple[Tensor, Tensor]) -> None:
    import torch.nn.functional as F

    x, y = batch
    loss = F.cross_entropy(net(x, arch), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def top1(net: Supernet, arch: Arch, x: Tensor, y: Tensor) -> float:
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


def search_bucket(cfg: DartsConfig, space: Space, warm: Supernet, data: NasData, cost: ExpectedParams,
                  names: dict[str, tuple], low: float, high: float, progress: bool) -> BucketSearch:
    """Alternate weight and architecture steps towards the bucket's centre from a copy of the warmed supernet."""
    import copy

    import torch
    import torch.nn.functional as F

    family = get_family(space.family)
    params, flops, free_share = family.params, family.flops, family.relaxation.free_share
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
    in_bucket: tuple[float, Arch] | None = None  # the most probable drawn path in the bucket since the last check
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
            expected = float(cost(probs))
            free = None if free_share is None else free_share(space, probs)
        best = most_probable(space, logits)
        for a in dict.fromkeys([best, *([in_bucket[1]] if in_bucket else [])]):
            out.candidates.append(Candidate(a, params(space, a), flops(space, a), top1(net, a, eval_x, eval_y)))
        in_bucket = None
        cheap = cheap_share(probs, cheapest)
        out.history.append({"step": step, "tau": round(tau, 4), "expected_params": round(expected, 1),
                            "free_share": None if free is None else round(free, 4), "cheap_share": round(cheap, 4),
                            "argmax": best.id, "argmax_params": params(space, best)})
        out.logits.append({"step": step, "logits": {n: [round(t, 4) for t in v.detach().tolist()]
                                                    for n, v in logits.items()}})
        if progress:
            shares = f"free share {free:.2f}" if free is not None else f"cheap share {cheap:.2f}"
            print(f"  step {step}: E[params] {expected:,.0f} (target {target:,.0f}), {shares}, argmax {best.id} "
                  f"({params(space, best):,} params)", flush=True)
        if free is not None and free > cfg.collapse_share and expected <= target:
            out.stopped_at = step
            break
    return out


def warm_up(cfg: DartsConfig, space: Space, data: NasData) -> Supernet:
    """The supernet after `warmup_steps` weight steps on paths drawn by the family's `random_arch` (MBConv: OFA's
    sampling, uniform per decision; HyTra: uniform over paths)."""
    import random

    import torch

    family = get_family(space.family)
    random_arch = family.random_arch
    torch.manual_seed(cfg.seed)
    net = family.supernet(space).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.weight_lr, weight_decay=cfg.weight_decay)
    rng, train = random.Random(cfg.seed), batches(data.train_x, data.train_y, cfg.batch_size, cfg.seed)
    for _ in range(cfg.warmup_steps):
        weight_step(net, opt, random_arch(space, rng), next(train))
    return net


def reachable(space: Space, low: float, high: float) -> bool:
    (lo, hi), _ = get_family(space.family).cost_range(space)
    return low <= hi and high > lo


def darts(cfg: DartsConfig, out: str | Path, progress: bool = True) -> Path:
    """Search every reachable bucket; write preferred.json, logits.json and darts.png into `out`; returns the
    preferred.json path."""
    import torch

    family, space = relaxed_space(cfg.space)
    buckets = cfg.buckets or Buckets.default(space, "params")
    start = time.perf_counter()
    data = nas_data(cfg, space)  # first: a data source it cannot read leaves no folder behind
    warm = warm_up(cfg, space, data)
    warm_s = time.perf_counter() - start
    cost, names = family.relaxation.expected_params(space), decisions(space)
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
                "collapse_guard": (f"early stop past free share {cfg.collapse_share} at or under the target"
                                   if family.relaxation.free_share else "none: the space has no parameter-free "
                                   "choice"),
                "fitness": f"NAS-val top-1 (%) on {cfg.eval_images} images of the train split, through the "
                           f"search's supernet with batch statistics",
                **{k: v for k, v in asdict(cfg).items() if k != "buckets"},
                "bucket_by": "params", "buckets": asdict(buckets),
                "searches": [{"low": s.low, "high": s.high, "target": s.target, "stopped_at": s.stopped_at,
                              "free_share": [[h["step"], h["free_share"]] for h in s.history]} for s in searches]}
    candidates = [c for s in searches for c in s.candidates]
    stats = {"archs_scored": len(candidates),
             "seconds": {"warmup": round(warm_s, 1), "search": round(time.perf_counter() - start - warm_s, 1)}}
    doc = preferred_doc(space, selector, stats, buckets, pick_preferred(candidates, buckets, "params", cfg.top_n),
                        family=family.name)
    path = write_preferred(doc, out)
    write_json(Path(out) / "logits.json", {"schema_version": 1, "kind": "prezoo.darts-logits", "space": space.name,
                                           "searches": [{"low": s.low, "high": s.high, "target": s.target,
                                                         "history": s.history, "logits": s.logits}
                                                        for s in searches]})
    plot_search(space, searches, Path(out) / "darts.png")
    return path


def plot_search(space: Space, searches: list[BucketSearch], path: Path) -> Path:
    """Per bucket: the free share (the cheap share where the space has no parameter-free choice) and E[params] (its
    target dashed) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.io import atomic_write_figure

    fig, (share, cost) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    key = "cheap_share" if get_family(space.family).relaxation.free_share is None else "free_share"
    for s in searches:
        steps = [h["step"] for h in s.history]
        label = f"[{s.low:,.0f}, {s.high:,.0f})"
        share.plot(steps, [h[key] for h in s.history], marker=".", label=label)
        line, = cost.plot(steps, [h["expected_params"] for h in s.history], marker=".")
        cost.axhline(s.target, color=line.get_color(), ls="--", lw=0.8)
    share.set(xlabel="step", ylabel={"free_share": "share of parameter-free choices",
                                     "cheap_share": "share of each decision's cheapest option"}[key], ylim=(0, 1))
    cost.set(xlabel="step", ylabel="E[params] (target dashed)", yscale="log")
    share.legend(fontsize=7, title="params bucket", title_fontsize=7)
    fig.suptitle(f"{space.name}: DARTS (GDAS sampling) per params bucket", fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write_figure(path, fig)
    finally:
        plt.close(fig)
