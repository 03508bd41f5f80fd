"""Mixed precision as a bytes budget: EdMIPS (Cai & Vasconcelos, CVPR 2020) on a zoo entry
(`python -m training edmips`).

- Choices: per quantizable layer (every Conv2d and Linear of the entry's standalone subnet, any family) a softmax
  over the weight widths ONNX Runtime's CPU path serves from a file: int4, int8 (QDQ DequantizeLinear, per-output-
  channel symmetric scales), fp16 and fp32 (`zoo.precision.BITS`). Activations stay fp32: weight-only, as
  `export.mixed` writes it (activations cost no bytes in it). The budget counts the file's tensors: each weight
  at its width with its scales, every other float tensor of the model with its BatchNorms folded into their convs
  (`zoo.precision.folded`, as the file holds it) at fp32; the graph, names and metadata come on top
  (17-101 KB on the four entries of bench/data/edmips: a file is 1.1-2.4x its pick's bytes).
- Relaxation (EdMIPS's memory-saving form): the layer computes with W̄ = Σ_i π_i Q_i(W), Q_i the fake quantizer of
  choice i (straight-through gradient). A conv and a linear layer are linear in their weight, so this equals the
  π-weighted sum of the layer's outputs under each choice.
- Cost: E[bytes] = fixed + Σ_layers Σ_i π_i · bytes_i (packed weights plus one float32 scale per output channel for
  the integer choices; `zoo.precision.weight_bytes`), differentiable in the logits; loss_arch = CE + λ ·
  log(E[bytes] / budget)², one search per budget (as `training.darts` lands one pick per params bucket).
- Bi-level, first order: the logits learn (Adam, betas (0.5, 0.999)) on the first `arch_images` images of the zoo's
  validation split (its recorded source, seed and size, `training.evaluate.validation_split`); with `weight_lr` > 0
  a weight step (Adam, CE through the mixture) on a training-split batch precedes each of them; with 0 (default)
  the entry's weights stay as the zoo holds them. The model stays in eval mode throughout (BatchNorm statistics as
  stored). The test split is never read.
- Pick: each layer's most probable width; when that is over the budget, the layer whose next lower width is most
  probable relative to its current one steps down until it fits (`fit`). Each pick's top-1 is measured, fake-
  quantized in torch, on the rest of the validation split (images the logits never saw).

Writes OUT/ENTRY/BYTES.json per budget: the precision map (`zoo.precision`: layer -> bits) with its bytes, budget,
held-out top-1 and search history; with weight fine-tuning also OUT/ENTRY/BYTES.safetensors, the weights it goes
with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.checks import BATCH, IMAGES, LR, SEED, Range, check_all

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.store import Zoo

# torch loads inside the functions: `python -m training edmips --help` reads EDMIPS_RANGES without it
EDMIPS_RANGES = {"steps": Range(int, 1, 100_000), "batch_size": BATCH, "arch_lr": LR,
                 "weight_lr": Range(float, 0, 10), "cost_weight": Range(float, 0, 1e6),
                 "arch_images": Range(int, 1, IMAGES.high), "seed": SEED}
MAX_BUDGETS = 32
DEFAULT_BUDGETS = 3  # geometric steps between uniform int4 and uniform fp16 bytes (int8 falls near the middle)
ARCH_BETAS = (0.5, 0.999)
LOG_EVERY = 10
EVAL_BATCH = 500


@dataclass
class EdmipsConfig:
    """The settings of `python -m training edmips` (module docstring)."""

    budgets: tuple[float, ...] | None = None  # tensor bytes; None: DEFAULT_BUDGETS between uniform int4 and fp16
    steps: int = 150  # per budget: an architecture step each (and a weight step with weight_lr > 0)
    batch_size: int = 64
    arch_lr: float = 0.05
    weight_lr: float = 0.0  # 0: the entry's weights stay frozen
    cost_weight: float = 1.0  # λ of λ·log(E[bytes]/budget)²
    arch_images: int = 2_500  # the head of the validation split the logits learn on; the rest scores the picks
    seed: int = 0

    def __post_init__(self) -> None:
        check_all(self, EDMIPS_RANGES)
        if self.budgets is not None:
            budgets = tuple(self.budgets)
            if not budgets or len(budgets) > MAX_BUDGETS:
                raise ValueError(f"give 1 to {MAX_BUDGETS} budgets, got {len(budgets)}")
            if any(isinstance(b, bool) or not isinstance(b, int | float) or not 0 < b < math.inf for b in budgets):
                raise ValueError(f"budgets are positive byte counts, got {budgets}")
            self.budgets = budgets


@dataclass(frozen=True)
class Pick:
    """One budget's search: the precision map, its bytes, what it scores, how the search went."""

    budget: int
    bits: dict[str, int]
    bytes: int
    stepped_down: int  # layers `fit` lowered below their most probable width to meet the budget
    val_top1: float
    val_images: int
    history: list[dict[str, float]]
    seconds: float


# -- the relaxation --------------------------------------------------------------------------------------------------


def byte_table(model: nn.Module) -> Tensor:
    """[layers, choices] bytes of each layer's weight at each width of `zoo.precision.BITS`."""
    import torch

    from zoo.precision import BITS, quantizable_layers, weight_bytes

    return torch.tensor([[weight_bytes(m.weight.shape, b) for b in BITS] for m in quantizable_layers(model).values()],
                        dtype=torch.float64)


def expected_bytes(probs: Tensor, table: Tensor, fixed: int) -> Tensor:
    """E[file tensor bytes] under per-layer choice probabilities `probs` [layers, choices]."""
    return fixed + (probs.double() * table).sum()


def mixed_weights(model: nn.Module, probs: Tensor) -> dict[str, Tensor]:
    """Each layer's W̄ = Σ_i π_i Q_i(W) (EdMIPS's one-weight relaxation)."""
    from zoo.precision import BITS, fake_quantize, quantizable_layers

    return {name: sum(p[i] * fake_quantize(m.weight, b) for i, b in enumerate(BITS))
            for (name, m), p in zip(quantizable_layers(model).items(), probs, strict=True)}


def mixed_forward(model: nn.Module, probs: Tensor, x: Tensor) -> Tensor:
    from zoo.precision import substituted

    with substituted(model, lambda: mixed_weights(model, probs)):
        return model(x)


# -- the pick --------------------------------------------------------------------------------------------------------


def fit(probs: Tensor, table: Tensor, fixed: int, budget: float) -> tuple[list[int], int]:
    """(choice index per layer, layers stepped down): the most probable choices, then, while over `budget`, the layer
    whose next lower width is most probable relative to its current one steps down. ValueError if even every layer
    at its lowest width is over."""
    if fixed + float(table[:, 0].sum()) > budget:
        raise ValueError(f"budget {budget:,.0f} bytes is under the smallest this model makes: "
                         f"{fixed + float(table[:, 0].sum()):,.0f} bytes with every layer at the lowest width")
    probs = probs.clamp_min(1e-12)  # a width of probability 0 is still a step to compare
    index = probs.argmax(1).tolist()
    stepped = 0
    while fixed + sum(float(table[layer, i]) for layer, i in enumerate(index)) > budget:
        layer = max((layer for layer, i in enumerate(index) if i > 0),
                    key=lambda layer: float(probs[layer, index[layer] - 1] / probs[layer, index[layer]]))
        index[layer] -= 1
        stepped += 1
    return index, stepped


def search(model: nn.Module, budget: float, train: Iterator | None, arch: Iterator, cfg: EdmipsConfig
           ) -> tuple[dict[str, int], int, list[dict[str, float]]]:
    """(precision map, layers stepped down to fit, history) of one budget; fine-tunes `model` in place when `train`
    is given (weight steps), else leaves it as it is."""
    import torch
    import torch.nn.functional as F

    from zoo.precision import BITS, fixed_bytes, quantizable_layers

    model.eval().requires_grad_(train is not None)
    table, fixed = byte_table(model), fixed_bytes(model)
    logits = torch.zeros(table.shape, requires_grad=True)
    arch_opt = torch.optim.Adam([logits], lr=cfg.arch_lr, betas=ARCH_BETAS)
    weight_opt = torch.optim.Adam(model.parameters(), lr=cfg.weight_lr) if train is not None else None
    history = []
    for step in range(cfg.steps):
        if weight_opt is not None:
            x, y = next(train)
            weight_opt.zero_grad()
            F.cross_entropy(mixed_forward(model, logits.detach().softmax(1), x), y).backward()
            weight_opt.step()
        x, y = next(arch)
        probs = logits.softmax(1)
        ce = F.cross_entropy(mixed_forward(model, probs, x), y)
        e = expected_bytes(probs, table, fixed)
        arch_opt.zero_grad()
        (ce + cfg.cost_weight * torch.log(e / budget) ** 2).backward()
        arch_opt.step()
        if step % LOG_EVERY == 0 or step == cfg.steps - 1:
            history.append({"step": step, "expected_bytes": round(e.item(), 1), "ce": round(ce.item(), 4)})
    index, stepped = fit(logits.detach().softmax(1), table, fixed, budget)
    return {name: BITS[i] for name, i in zip(quantizable_layers(model), index, strict=True)}, stepped, history


# -- data and the command --------------------------------------------------------------------------------------------


def splits(zoo: Zoo, cfg: EdmipsConfig):
    """(training split or None when frozen, the head of the validation split the logits learn on, its rest), as the
    zoo's training recorded them; ValueError where the zoo's `validation` record names another split."""
    from torch.utils.data import Subset

    from training.data import load_data
    from training.evaluate import validation_split
    from zoo.schema import held_out_split

    val, block = validation_split(zoo.doc.get("training"), zoo.space)
    recorded = zoo.validation
    if recorded is not None and (recorded.get("seed"), recorded.get("images")) != (block["seed"], block["images"]):
        raise ValueError(f"zoo {zoo.name}'s validation record (seed {recorded.get('seed')}, {recorded.get('images')} "
                         f"images) is not the split its training settings hold out (seed {block['seed']}, "
                         f"{block['images']} images)")
    if cfg.arch_images >= len(val):
        raise ValueError(f"arch_images {cfg.arch_images} leaves none of the {len(val)} validation images to score "
                         f"the picks on")
    train = None
    if cfg.weight_lr > 0:
        held = held_out_split(zoo.doc.get("training"))
        train = load_data(held.source, "train", img_size=zoo.space.img_size, in_chans=zoo.space.in_chans,
                          val_size=held.val_size, seed=held.seed)[0]
    return train, Subset(val, range(cfg.arch_images)), Subset(val, range(cfg.arch_images, len(val)))


def endless(dataset, batch_size: int, seed: int) -> Iterator:
    """Shuffled batches of `dataset`, epoch after epoch, in an order fixed by `seed`."""
    from training.data import make_loader

    epoch = 0
    while True:
        yield from make_loader(dataset, batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=True)
        epoch += 1


def default_budgets(model: nn.Module) -> tuple[float, ...]:
    """DEFAULT_BUDGETS bytes geometrically between every layer at int4 and every layer at fp16, ends excluded."""
    from zoo.precision import model_bytes, uniform

    low, high = model_bytes(model, uniform(model, 4)), model_bytes(model, uniform(model, 16))
    return tuple(round(low * (high / low) ** (k / (DEFAULT_BUDGETS + 1))) for k in range(1, DEFAULT_BUDGETS + 1))


def checked_budgets(model: nn.Module, budgets: tuple[float, ...] | None) -> tuple[float, ...]:
    """`budgets` (None: `default_budgets`), each checked to be reachable before any search starts."""
    from zoo.precision import model_bytes, uniform

    smallest = model_bytes(model, uniform(model, 4))
    if low := [b for b in budgets or () if b < smallest]:
        raise ValueError(f"budget {min(low):,.0f} bytes is under the smallest this model makes: {smallest:,} bytes "
                         f"with every layer at int4")
    return budgets or default_budgets(model)


def edmips(zoo: Zoo, entry_id: str, cfg: EdmipsConfig, out: str | Path) -> list[Path]:
    """One search per budget on `entry_id` of `zoo`; writes and returns each pick's precision map."""
    import torch

    from training.evaluate import accuracy_of, tensor_batches
    from zoo.precision import model_bytes, quantized

    try:
        entry = zoo.entry(entry_id)
    except KeyError as e:  # the command line's error: one line
        raise ValueError(e.args[0]) from None
    budgets = checked_budgets(zoo.subnet(entry), cfg.budgets)
    train, arch_set, held = splits(zoo, cfg)
    held_batches = tensor_batches(held, EVAL_BATCH)
    folder = Path(out) / entry.id
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for budget in budgets:
        torch.manual_seed(cfg.seed)
        model, started = zoo.subnet(entry), time.perf_counter()
        trains = None if train is None else endless(train, cfg.batch_size, cfg.seed)
        bits, stepped, history = search(model, budget, trains, endless(arch_set, cfg.batch_size, cfg.seed), cfg)
        with quantized(model, bits):
            top1 = accuracy_of(model, held_batches)
        pick = Pick(round(budget), bits, model_bytes(model, bits), stepped, round(top1.top1, 2), top1.n, history,
                    round(time.perf_counter() - started, 1))
        paths.append(_write_pick(folder, zoo, entry.id, model, pick, cfg))
    return paths


def _write_pick(folder: Path, zoo: Zoo, entry_id: str, model: nn.Module, pick: Pick, cfg: EdmipsConfig) -> Path:
    from safetensors.torch import save

    from zoo.io import atomic_write_bytes
    from zoo.precision import write_map

    about: dict[str, Any] = {"zoo": zoo.name, "entry": entry_id, "method": "edmips", **asdict(pick),
                             "settings": {k: v for k, v in asdict(cfg).items() if k != "budgets"}}
    del about["bits"]
    if cfg.weight_lr > 0:
        weights = folder / f"{pick.budget}.safetensors"
        atomic_write_bytes(weights, save({k: v.contiguous() for k, v in model.state_dict().items()}))
        about["weights"] = weights.name
    return write_map(folder / f"{pick.budget}.json", pick.bits, **about)
