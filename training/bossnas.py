"""BossNAS (ICCV 2021) as a label-free selector for the HyTra family (spec docs/bossnas-spec.md sections 3, 4, 7).

The supernet is cut in depth into blocks, trained and rated one at a time, in order:
1. Train block k by ensemble bootstrapping (EB): an online supernet with a projector and a predictor per block, and
   its EMA copy, the target (no predictor). Each step samples P distinct paths of the block; every path predicts,
   from one view, the ensemble (mean of normalised projections) of the target's sampled paths on the other view.
   Block k's input is the stem plus the best earlier paths, frozen and run without gradients (the stem trains with
   block 0).
2. Rate every path of block k against the population centre: the mean of the target's projections over all of the
   block's paths, on NAS-val view pairs drawn once; each path's BatchNorm statistics are recalibrated first.
3. Budgets (spec 4.3): block k is fed from the best earlier path for *each* scale it can start at, and all (input
   scale, path) pairs are rated against one centre. An architecture's score is Σ_k L_k (λ = 1, `arch_score`); the
   best architecture of every param bucket goes to `preferred.json`, in the zero-cost selector's schema.

`target` "own" is the naive-bootstrap ablation (each path predicts its own EMA twin, spec 3.5); "supervised" is the
block-wise supervised baseline (paper Table 5): a linear classifier per (block, end scale) on the pooled block output,
trained with cross-entropy on one view and rated by validation cross-entropy.

Optimiser: SGD with momentum 0.9, lr 0.05 per 256 images, weight decay 1e-4, cosine to 0 and restarted per block
(SimSiam's recipe: a custom LARS is not worth it at micro scale; spec 3.4 says SGD also works). Gradients that are
exactly zero are dropped before the step, so candidates a step did not run get no weight decay (spec 6, item 8).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from training.checks import BATCH, IMAGES, LR, SEED, WEIGHT_DECAY, Range, check_all, json_text, write_json
from training.preferred import Buckets, Candidate, pick_preferred, preferred_doc, write_preferred
from zoo.families.hytra import (
    MICRO_HYTRA,
    STEM_SCALE,
    HyTraArch,
    HyTraSpace,
    HyTraSupernet,
    Layer,
    Step,
    block_paths,
    enumerate_archs,
    flops,
    layer_choices,
    params,
    run_layers,
)
from zoo.families.hytra import Candidate as LayerModules
from zoo.layers import recalibrate_bn

TARGETS = ("ensemble", "own", "supervised")
SCORES_SCHEMA_VERSION = 1
PROJ_IN, HIDDEN, PROJ_OUT = 256, 512, 128  # micro sizes of the adapter, the MLPs' hidden layer and the projection
SGD_MOMENTUM = 0.9
RATING_CHUNK = 500  # NAS-val images per forward while rating (memory only)
Steps = tuple[Step, ...]
COUNT = Range(int, 1, IMAGES.high)
BOSS_RANGES = {"epochs_per_block": Range(int, 1, 1000), "nas_train": COUNT, "nas_val": COUNT, "batch_size": BATCH,
               "paths": Range(int, 1, 1024), "seed": SEED, "val_size": IMAGES, "calibration": COUNT, "lr": LR,
               "weight_decay": WEIGHT_DECAY, "momentum_base": Range(float, 0, 1), "log_every": COUNT}


@dataclass
class BossConfig:
    space_type: ClassVar[type] = HyTraSpace  # what it searches (training.bossnas_mbconv's subclass: MBConv spaces)
    space: HyTraSpace = MICRO_HYTRA
    target: str = "ensemble"
    epochs_per_block: int = 2
    nas_train: int = 20_000
    nas_val: int = 1_000
    batch_size: int = 256
    paths: int = 4  # distinct paths per step
    seed: int = 0
    data: str = "fashion-mnist"
    val_size: int = 5_000  # held out of the train split (seed 0, as the zoo's training runs); NAS-val is its head
    calibration: int = 256  # training images that recalibrate BatchNorm before each path is rated
    lr: float = 0.05  # per 256 images
    weight_decay: float = 1e-4
    momentum_base: float = 0.99  # EMA momentum at each block's start, cosine to 1
    buckets: Buckets | None = None  # by params; default per space (`Family.default_buckets`)
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.space, self.space_type):
            raise ValueError(f"{type(self).__name__} searches a {self.space_type.__name__}, got "
                             f"{type(self.space).__name__}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}, got {self.target!r}")
        check_all(self, BOSS_RANGES)
        if self.batch_size > self.nas_train:
            raise ValueError(f"batch_size {self.batch_size} exceeds nas_train {self.nas_train}: no full batch")
        if self.calibration > self.nas_train:
            raise ValueError(f"calibration {self.calibration} exceeds nas_train {self.nas_train}")
        if self.buckets is None:
            self.buckets = Buckets.default(self.space, "params")

    @property
    def ssl(self) -> bool:
        return self.target != "supervised"


# -- views (spec 3.4, micro column) -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewPipeline:
    """BYOL's augmentations for small gray images, batched on tensors: RandomResizedCrop (bilinear) with hflip,
    brightness then contrast, 3x3 Gaussian blur, solarisation. All draws come from the caller's generator."""

    blur: float  # probability of the blur
    solarize: float  # probability of solarisation
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: float = 0.4  # brightness and contrast factors in [1 - jitter, 1 + jitter]
    jitter_p: float = 0.8
    sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, x: Tensor, mean: Sequence[float], std: Sequence[float], generator: torch.Generator) -> Tensor:
        """`x` normalised with mean/std, (N, C, H, W); returns a view, normalised the same way."""
        m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        rand = lambda: torch.rand(len(x), generator=generator)
        pixels = _resized_crop_flip(x * s + m, self.crop_scale, rand)
        pixels = _jitter(pixels, self.jitter, rand() < self.jitter_p, rand)
        pixels = torch.where(_mask(rand() < self.blur), _blur(pixels, self.sigma, rand), pixels)
        pixels = torch.where(_mask(rand() < self.solarize) & (pixels >= 0.5), 1 - pixels, pixels)
        return (pixels - m) / s


VIEW_1 = ViewPipeline(blur=0.1, solarize=0.0)
VIEW_2 = ViewPipeline(blur=1.0, solarize=0.2)


def _mask(chosen: Tensor) -> Tensor:
    return chosen.view(-1, 1, 1, 1)


def _uniform(rand, low: float, high: float) -> Tensor:
    return low + (high - low) * rand()


def _resized_crop_flip(x: Tensor, scale: tuple[float, float], rand) -> Tensor:
    """A crop of area fraction in `scale` and aspect ratio in [3/4, 4/3] (sides capped at the image's), resized back
    to the full size by one affine resampling, mirrored with probability 1/2."""
    area, ratio = _uniform(rand, *scale), torch.exp(_uniform(rand, math.log(3 / 4), math.log(4 / 3)))
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # fractions of the side
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = torch.where(rand() < 0.5, -w, w)
    theta[:, 1, 1] = h
    theta[:, 0, 2], theta[:, 1, 2] = _uniform(rand, -1, 1) * (1 - w), _uniform(rand, -1, 1) * (1 - h)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(x: Tensor, strength: float, chosen: Tensor, rand) -> Tensor:
    brightness, contrast = (_uniform(rand, 1 - strength, 1 + strength).view(-1, 1, 1, 1) for _ in range(2))
    bright = (x * brightness).clamp(0, 1)
    grey = bright.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(_mask(chosen), ((bright - grey) * contrast + grey).clamp(0, 1), x)


def _blur(x: Tensor, sigma: tuple[float, float], rand) -> Tensor:
    """3x3 Gaussian blur with a σ per image, reflect padding (torchvision's), as one grouped convolution."""
    n, c, height, width = x.shape
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * _uniform(rand, *sigma).view(-1, 1) ** 2))
    taps = taps / taps.sum(dim=1, keepdim=True)
    kernels = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(c, dim=0).unsqueeze(1)  # (n*c, 1, 3, 3)
    padded = F.pad(x.reshape(1, n * c, height, width), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernels, groups=n * c).view_as(x)


# -- networks (spec 3.1) ----------------------------------------------------------------------------------------------
def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def _init_linears(module: nn.Module, init) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ScaleHeads(nn.Module):
    """What follows a block: global average pool, a module per kind of output (paths of a block end at several
    scales, or widths), and a module shared by all of them. `at(key)` is that chain as one module."""

    def __init__(self, per_scale: dict[str, nn.Module], shared: nn.Module) -> None:
        super().__init__()
        self.per_scale, self.shared = nn.ModuleDict(per_scale), shared

    def at(self, key: str) -> nn.Sequential:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), self.per_scale[key], self.shared)


HeadInputs = Mapping[str, int]  # a block's kinds of output (HyTra: "s<scale>"; MBConv: "w<width>") -> channels


def scale_inputs(space: HyTraSpace) -> dict[str, int]:
    return {f"s{s}": c for s, c in enumerate(space.scale_channels)}


def projector(inputs: HeadInputs) -> ScaleHeads:
    """Adapters (Linear C -> 256 without bias, BN1d) into one space, then the MLP 256 -> 512 -> 128; Kaiming fan-in
    init."""
    adapters = {key: nn.Sequential(nn.Linear(c, PROJ_IN, bias=False), nn.BatchNorm1d(PROJ_IN))
                for key, c in inputs.items()}
    init = lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    return _init_linears(ScaleHeads(adapters, _mlp(PROJ_IN, HIDDEN, PROJ_OUT)), init)


def predictor() -> nn.Sequential:
    """The MLP 128 -> 512 -> 128, weights N(0, 0.01)."""
    return _init_linears(_mlp(PROJ_OUT, HIDDEN, PROJ_OUT), lambda w: nn.init.normal_(w, std=0.01))


def classifier(inputs: HeadInputs, num_classes: int) -> ScaleHeads:
    """The supervised baseline's head: one linear classifier per kind of output."""
    return ScaleHeads({key: nn.Linear(c, num_classes) for key, c in inputs.items()}, nn.Identity())


def siamese_nets(supernet: nn.Module, blocks: Sequence[HeadInputs], num_classes: int,
                 target: str) -> tuple[nn.ModuleDict, nn.ModuleDict | None]:
    """The online net (supernet, heads per block, predictors per block for the SSL targets) and its EMA copy without
    predictors (None for "supervised"). Module names match, so the EMA pairs parameters by name."""
    if target == "supervised":
        return nn.ModuleDict({"supernet": supernet, "heads": nn.ModuleList(
            classifier(inputs, num_classes) for inputs in blocks)}), None
    heads = nn.ModuleList(projector(inputs) for inputs in blocks)
    ema = nn.ModuleDict({"supernet": copy.deepcopy(supernet), "heads": copy.deepcopy(heads)}).requires_grad_(False)
    predictors = nn.ModuleList(predictor() for _ in blocks)
    return nn.ModuleDict({"supernet": supernet, "heads": heads, "predictors": predictors}), ema


def build_nets(space: HyTraSpace, target: str) -> tuple[nn.ModuleDict, nn.ModuleDict | None]:
    return siamese_nets(HyTraSupernet(space), [scale_inputs(space)] * space.num_blocks, space.num_classes, target)


def head(net: nn.ModuleDict, block: int, key: str) -> nn.Sequential:
    """What follows a path of `block` ending in `key`: the prediction q(g(·)) of the online net, the projection g(·)
    of the target, the logits of the supervised baseline."""
    return nn.Sequential(net["heads"][block].at(key), *([net["predictors"][block]] if "predictors" in net else []))


def momentum_at(step: int, total: int, base: float) -> float:
    """BYOL's EMA momentum, cosine from `base` at a block's first step to 1 at its end."""
    return 1 - (1 - base) * (math.cos(math.pi * step / total) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """ξ ← m·ξ + (1 − m)·θ over the target's parameters (backbone and projectors)."""
    theta = dict(online.named_parameters())
    xi = list(target.named_parameters())
    torch._foreach_lerp_([p for _, p in xi], [theta[name] for name, _ in xi], 1 - momentum)


class Layers(nn.Module):
    """Some supernet candidates run in order (`run_layers`) as one module: what BN recalibration calls."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(LayerModules(*layer) for layer in layers)

    def forward(self, x: Tensor) -> Tensor:
        return run_layers(x, [(c.projection, c.body, c.shortcut) for c in self.layers])


def prefix_module(net: nn.ModuleDict, prefix: Steps) -> nn.Sequential:
    """The stem and the chosen earlier paths: a block's input."""
    supernet = net["supernet"]
    return nn.Sequential(supernet.stem, Layers(supernet.layers(layer_choices(supernet.space, 0, STEM_SCALE, prefix))))


def block_module(net: nn.ModuleDict, block: int, in_scale: int, steps: Steps) -> nn.Sequential:
    """One path of `block` from an input at `in_scale`, then its `head`."""
    supernet, end = net["supernet"], steps[-1][0]
    layers = supernet.layers(layer_choices(supernet.space, block * supernet.space.block_size, in_scale, steps))
    return nn.Sequential(Layers(layers), head(net, block, f"s{end}"))


def in_scale_of(prefix: Steps) -> int:
    return prefix[-1][0] if prefix else STEM_SCALE


@dataclass(frozen=True)
class BlockRun:
    """How a block runs in a family's nets, given its input: `prefix(net)` maps images to the block's input (the stem
    and the chosen earlier paths), `path(net, path)` one path of the block and its `head`. What the EB step needs of
    a family; block 0 (`index`) trains the stem, later blocks run their prefix without gradients."""

    index: int
    prefix: Callable[[nn.ModuleDict], Callable[[Tensor], Tensor]]
    path: Callable[[nn.ModuleDict, Any], Callable[[Tensor], Tensor]]


def hytra_run(block: int, prefix: Steps) -> BlockRun:
    return BlockRun(block, lambda net: prefix_module(net, prefix),
                    lambda net, steps: block_module(net, block, in_scale_of(prefix), steps))


# -- one training step (spec 3.2, 3.5) --------------------------------------------------------------------------------
def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """ℓ(a, b) = ‖n(a) − n(b)‖² = 2 − 2·cos(a, b), batch mean."""
    return (2 - 2 * F.cosine_similarity(prediction, target, dim=1)).mean()


@torch.no_grad()
def eb_targets(target: nn.ModuleDict, run: BlockRun, paths: Sequence, views: Sequence[tuple[Tensor, Tensor]],
               mode: str) -> list[tuple[Tensor, Tensor]]:
    """Per path, what its predictions of view 1 and of view 2 are pulled towards: the *other* view's normalised
    target projection, the path's own EMA twin ("own") or the mean over the sampled paths ("ensemble", Eq. 3)."""
    run_prefix = run.prefix(target)
    own = [[F.normalize(run.path(target, p)(run_prefix(v)), dim=1) for v in pair]
           for p, pair in zip(paths, views, strict=True)]
    if mode == "own":
        return [(t2, t1) for t1, t2 in own]
    t1, t2 = (torch.stack(ts).mean(dim=0) for ts in zip(*own, strict=True))
    return [(t2, t1)] * len(paths)


def bootstrap_targets(target: nn.ModuleDict, block: int, prefix: Steps, paths: Sequence[Steps],
                      views: Sequence[tuple[Tensor, Tensor]], mode: str) -> list[tuple[Tensor, Tensor]]:
    """`eb_targets` of HyTra block `block` after `prefix`."""
    return eb_targets(target, hytra_run(block, prefix), paths, views, mode)


def train_step(online: nn.ModuleDict, target: nn.ModuleDict | None, cfg: BossConfig, block: int, prefix: Steps,
               paths: Sequence[Steps], x: Tensor, y: Tensor, mean, std, generator: torch.Generator) -> float:
    """`eb_step` of HyTra block `block` after `prefix`."""
    return eb_step(online, target, cfg, hytra_run(block, prefix), paths, x, y, mean, std, generator)


def eb_step(online: nn.ModuleDict, target: nn.ModuleDict | None, cfg: BossConfig, run: BlockRun, paths: Sequence,
            x: Tensor, y: Tensor, mean, std, generator: torch.Generator) -> float:
    """Accumulate one step's gradients, path by path (the loss is a sum over paths), and return the loss."""
    run_prefix = run.prefix(online)
    frozen = torch.no_grad() if run.index else torch.enable_grad()  # the stem trains with block 0 only
    if cfg.ssl:
        views = [(VIEW_1(x, mean, std, generator), VIEW_2(x, mean, std, generator)) for _ in paths]
        pulls = eb_targets(target, run, paths, views, cfg.target)
    else:
        view = VIEW_1(x, mean, std, generator)
    total = 0.0
    for i, steps in enumerate(paths):
        run_block = run.path(online, steps)
        if cfg.ssl:
            with frozen:
                inputs = [run_prefix(v) for v in views[i]]
            loss = sum(byol_loss(run_block(h), t) for h, t in zip(inputs, pulls[i], strict=True))
        else:
            with frozen:
                h = run_prefix(view)
            loss = F.cross_entropy(run_block(h), y)
        loss.backward()
        total += loss.item()
    return total


def drop_zero_grads(module: nn.Module) -> None:
    """Gradients that are exactly zero become None, so that the optimiser leaves those parameters alone."""
    for p in module.parameters():
        if p.grad is not None and not p.grad.any():
            p.grad = None


# -- training a block (spec 3.3, 4.3) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prefix:
    """The best path through the blocks so far that ends at one scale, with its summed loss."""

    steps: Steps
    score: float


@dataclass
class NasData:
    """NAS-train and NAS-val as normalised tensors, with the normalisation (the views undo it)."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]


def train_block(online: nn.ModuleDict, target: nn.ModuleDict | None, cfg: BossConfig, block: int,
                prefixes: dict[int, Prefix], data: NasData, generator: torch.Generator, log) -> None:
    """`eb_train` of HyTra block `block`: each step draws an input scale uniformly over `prefixes` (one per scale the
    previous block can end at), then `paths` distinct paths valid from it."""
    scales = sorted(prefixes)
    candidates = {s: block_paths(cfg.space, s) for s in scales}

    def draw() -> tuple[BlockRun, list[Steps]]:
        scale = scales[int(torch.randint(len(scales), (), generator=generator))]
        pick = torch.randperm(len(candidates[scale]), generator=generator)[:cfg.paths]
        return hytra_run(block, prefixes[scale].steps), [candidates[scale][int(i)] for i in pick]

    eb_train(online, target, cfg, block, draw, data, generator, log)


def eb_train(online: nn.ModuleDict, target: nn.ModuleDict | None, cfg: BossConfig, block: int,
             draw: Callable[[], tuple[BlockRun, Sequence]], data: NasData, generator: torch.Generator, log) -> None:
    """`epochs_per_block` epochs over NAS-train, each step on the block input and paths `draw` gives. SGD, the LR and
    the EMA momentum restart here."""
    online.train()
    if target is not None:
        target.train()
    per_epoch = len(data.train_x) // cfg.batch_size
    total = cfg.epochs_per_block * per_epoch
    lr = cfg.lr * cfg.batch_size / 256
    opt = torch.optim.SGD(online.parameters(), lr=lr, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay)
    bar = tqdm(range(total), desc=f"train block {block}", unit="step", disable=not cfg.progress)
    start, window = time.perf_counter(), []
    for t in bar:
        if t % per_epoch == 0:
            order = torch.randperm(len(data.train_x), generator=generator)
        idx = order[(t % per_epoch) * cfg.batch_size:(t % per_epoch + 1) * cfg.batch_size]
        run, paths = draw()
        for group in opt.param_groups:
            group["lr"] = lr * (math.cos(math.pi * t / total) + 1) / 2
        opt.zero_grad(set_to_none=True)
        loss = eb_step(online, target, cfg, run, paths, data.train_x[idx], data.train_y[idx], data.mean, data.std,
                       generator)
        drop_zero_grads(online)
        opt.step()
        if target is not None:
            ema_update(target, online, momentum_at(t, total, cfg.momentum_base))
        window.append(loss)
        if (t + 1) % cfg.log_every == 0 or t + 1 == total:
            seconds = time.perf_counter() - start
            log({"event": "train", "block": block, "step": t + 1, "steps": total, "loss": sum(window) / len(window),
                 "lr": opt.param_groups[0]["lr"], "img_s": len(window) * cfg.batch_size / seconds})
            bar.set_postfix(loss=f"{sum(window) / len(window):.3f}")
            start, window = time.perf_counter(), []


# -- rating a block (spec 4.1) ----------------------------------------------------------------------------------------
@dataclass
class RatingInputs:
    """Fixed inputs of every rating, drawn once: the NAS-val view pairs and the calibration batch's view pairs for
    the SSL targets, the plain images for the supervised baseline (rated as a classifier is validated)."""

    val: tuple[Tensor, ...]
    val_y: Tensor
    calibration: tuple[Tensor, ...]


def rating_inputs(cfg: BossConfig, data: NasData, generator: torch.Generator) -> RatingInputs:
    cal = data.train_x[:cfg.calibration]
    if not cfg.ssl:
        return RatingInputs((data.val_x,), data.val_y, (cal,))
    views = lambda x: tuple(view(x, data.mean, data.std, generator) for view in (VIEW_1, VIEW_2))
    return RatingInputs(views(data.val_x), data.val_y, views(cal))


@torch.no_grad()
def run_chunks(module: nn.Module, x: Tensor) -> Tensor:
    """`module(x)`, RATING_CHUNK images at a time."""
    return torch.cat([module(chunk) for chunk in x.split(RATING_CHUNK)])


@dataclass
class BlockInputs:
    """One net's block input for the calibration batch and for NAS-val, through one recalibrated prefix."""

    calibration: tuple[Tensor, ...]
    val: tuple[Tensor, ...]


def block_inputs(net: nn.ModuleDict, prefix: Steps, inputs: RatingInputs) -> BlockInputs:
    return feed(prefix_module(net, prefix), inputs)


def feed(prefix: nn.Module, inputs: RatingInputs) -> BlockInputs:
    """A block's inputs through `prefix` (the stem and earlier paths), its BN statistics recalibrated first."""
    run = recalibrate_bn(prefix, inputs.calibration)
    return BlockInputs(tuple(run_chunks(run, x) for x in inputs.calibration),
                       tuple(run_chunks(run, x) for x in inputs.val))


def path_outputs(net: nn.ModuleDict, block: int, in_scale: int, steps: Steps, fed: BlockInputs) -> list[Tensor]:
    return outputs(block_module(net, block, in_scale, steps), fed)


def outputs(path: nn.Module, fed: BlockInputs) -> list[Tensor]:
    """One path's head outputs on NAS-val, after recalibrating the BN statistics of the path and its heads on the
    calibration batch (spec 4.1; the momentum is restored afterwards, unlike the official code)."""
    run = recalibrate_bn(path, fed.calibration)
    return [run_chunks(run, h) for h in fed.val]


def rating_loss(outs: Sequence[Tensor], centres: tuple[Tensor, Tensor] | None, labels: Tensor) -> float:
    """SSL (the implemented symmetric form): ℓ(q(g(S(α; x₁))), c̄₂) + ℓ(q(g(S(α; x₂))), c̄₁), batch means, given the
    centres (c̄₁, c̄₂). Supervised (no centres): validation cross-entropy."""
    if centres is None:
        return float(F.cross_entropy(outs[0], labels))
    c1, c2 = centres
    return float(byol_loss(outs[0], c2) + byol_loss(outs[1], c1))


Losses = dict[int, dict[Steps, float]]  # input scale -> path -> loss


def rate_block(online: nn.ModuleDict, target: nn.ModuleDict | None, cfg: BossConfig, block: int,
               prefixes: dict[int, Prefix], inputs: RatingInputs) -> Losses:
    """Every (input scale, path) pair of `block`. SSL: the implemented symmetric form, L(α) = mean over NAS-val of
    ℓ(q(g(S(α; x₁))), c̄₂) + ℓ(q(g(S(α; x₂))), c̄₁), the centres c̄ being the EMA net's raw projections averaged over
    all pairs (one centre for every input scale). Supervised: validation cross-entropy."""
    pairs = [(s, steps) for s in sorted(prefixes) for steps in block_paths(cfg.space, s)]
    online_in = {s: block_inputs(online, prefixes[s].steps, inputs) for s in prefixes}
    bar = lambda what: tqdm(pairs, desc=f"{what} block {block}", unit="path", disable=not cfg.progress)
    centres = None
    if cfg.ssl:
        target_in = {s: block_inputs(target, prefixes[s].steps, inputs) for s in prefixes}
        sums = [torch.zeros(len(inputs.val_y), PROJ_OUT) for _ in inputs.val]
        for s, steps in bar("centre"):
            for total, z in zip(sums, path_outputs(target, block, s, steps, target_in[s]), strict=True):
                total += z
        centres = tuple(total / len(pairs) for total in sums)
    losses: Losses = {s: {} for s in prefixes}
    for s, steps in bar("rate"):
        losses[s][steps] = rating_loss(path_outputs(online, block, s, steps, online_in[s]), centres, inputs.val_y)
    return losses


def next_prefixes(prefixes: dict[int, Prefix], losses: Losses) -> dict[int, Prefix]:
    """Per scale a path can end at after this block, the best path to it (summed losses, λ = 1): what feeds the
    next block, so that every budget finds its input (spec 4.3)."""
    best: dict[int, Prefix] = {}
    for s, table in losses.items():
        for steps, loss in table.items():
            candidate = Prefix(prefixes[s].steps + steps, prefixes[s].score + loss)
            end = steps[-1][0]
            if end not in best or candidate.score < best[end].score:
                best[end] = candidate
    return dict(sorted(best.items()))


# -- scores, selection, output ----------------------------------------------------------------------------------------
def path_key(steps: Steps) -> str:
    """A block path as scores.json names it: 'S0c S1a S1c S1c'."""
    return HyTraArch(steps).describe()


def scores_doc(cfg: BossConfig, blocks: list[Losses], prefixes: list[dict[int, Prefix]]) -> dict:
    """Every rated path's loss, per block and input scale, and the prefix each input scale was fed from."""
    return {
        "schema_version": SCORES_SCHEMA_VERSION, "kind": "prezoo.bossnas-scores", "family": "hytra",
        "space": cfg.space.to_dict(), "space_hash": cfg.space.hash, "target": cfg.target,
        "blocks": [{"prefixes": {str(s): {"layers": [list(x) for x in p.steps], "score": p.score}
                                 for s, p in fed.items()},
                    "losses": {str(s): {path_key(steps): loss for steps, loss in table.items()}
                               for s, table in losses.items()}}
                   for fed, losses in zip(prefixes, blocks, strict=True)],
    }


def arch_score(scores: dict, arch: HyTraArch) -> float:
    """Σ_k L_k (λ = 1) of any architecture of the space from a scores.json document (lower is better). Each L_k was
    measured after the best earlier path into the same scale, so for other prefixes it is an approximation (spec
    4.2)."""
    space = HyTraSpace.from_dict(scores["space"])
    space.validate(arch)
    total = 0.0
    for k, block in enumerate(scores["blocks"]):
        first = k * space.block_size
        in_scale = in_scale_of(arch.layers[:first])
        table = block["losses"].get(str(in_scale))
        if table is None:
            raise ValueError(f"block {k} was not rated from S{in_scale}, where {arch.id} enters it")
        total += table[path_key(arch.layers[first:first + space.block_size])]
    return total


def selection_doc(cfg: BossConfig, scores: dict, seconds: dict[str, float]) -> dict:
    """preferred.json: per param bucket the architecture of least Σ_k L_k (score = −Σ L, higher is better)."""
    space = cfg.space
    candidates = [Candidate(a, params(space, a), flops(space, a), -arch_score(scores, a))
                  for a in enumerate_archs(space)]
    preferred = pick_preferred(candidates, cfg.buckets, "params", top_n=1)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("space", "buckets", "progress")}
    selector = {"method": "bossnas", **settings, "optimizer": "sgd", "bucket_by": "params",
                "buckets": asdict(cfg.buckets), "top_n": 1}
    return preferred_doc(space, selector, {"archs": len(candidates), "seconds": seconds}, cfg.buckets, preferred,
                         family="hytra")


def _tensors(dataset: Dataset, indices: Tensor) -> tuple[Tensor, Tensor]:
    return next(iter(DataLoader(Subset(dataset, indices.tolist()), batch_size=len(indices))))


def nas_data(cfg: BossConfig) -> NasData:
    """NAS-train: a seeded subset of the train split; NAS-val: the head of the val split (held out of train). Never
    the test split."""
    from training.data import load_data

    common = dict(img_size=cfg.space.img_size, in_chans=cfg.space.in_chans, val_size=cfg.val_size, seed=0)
    train, info = load_data(cfg.data, "train", **common)
    val, _ = load_data(cfg.data, "val", **common)
    for name, want, have in (("nas_train", cfg.nas_train, len(train)), ("nas_val", cfg.nas_val, len(val))):
        if want > have:
            raise ValueError(f"{name} {want} exceeds the {have} images of {cfg.data}'s split")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.nas_train]
    (x, y), (vx, vy) = _tensors(train, pick), _tensors(val, torch.arange(cfg.nas_val))
    return NasData(x, y, vx, vy, info.mean, info.std)


def search(cfg: BossConfig, out: str | Path) -> tuple[dict, dict]:
    """Run BossNAS block by block; write scores.json, preferred.json and log.jsonl into `out`; return the scores
    and preferred documents."""
    out = Path(out)
    t0 = time.perf_counter()
    data = nas_data(cfg)  # first: a data source it cannot read leaves no folder behind
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    online, target = build_nets(cfg.space, cfg.target)
    generator = torch.Generator().manual_seed(cfg.seed)
    inputs = rating_inputs(cfg, data, generator)
    prefixes, fed, blocks, seconds = {STEM_SCALE: Prefix((), 0.0)}, [], [], {}
    with (out / "log.jsonl").open("w") as f:
        log = lambda record: print(json_text(record, str(out / "log.jsonl"), indent=None), file=f, flush=True)
        for k in range(cfg.space.num_blocks):
            t = time.perf_counter()
            train_block(online, target, cfg, k, prefixes, data, generator, log)
            seconds[f"train_block{k}"], t = time.perf_counter() - t, time.perf_counter()
            losses = rate_block(online, target, cfg, k, prefixes, inputs)
            seconds[f"rate_block{k}"] = time.perf_counter() - t
            rated = [v for table in losses.values() for v in table.values()]
            log({"event": "rate", "block": k, "paths": len(rated), "seconds": seconds[f"rate_block{k}"],
                 "best": min(rated)})
            fed.append(prefixes)
            blocks.append(losses)
            prefixes = next_prefixes(prefixes, losses)
    scores = scores_doc(cfg, blocks, fed)
    write_json(out / "scores.json", scores)
    seconds["total"] = time.perf_counter() - t0
    preferred = selection_doc(cfg, scores, seconds)
    write_preferred(preferred, out)
    return scores, preferred
