"""The settings of `python -m training train` and `finetune`, as plain dataclasses, and the valid range of every
numeric setting of those and of `select` (no torch): the command line builds its options from them, so `--help`
answers without loading the trainers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from training.checks import (
    BATCH,
    EPOCHS,
    IMAGES,
    LR,
    MIN_LR,
    PROBABILITY,
    SEED,
    WARMUP,
    WEIGHT_DECAY,
    Range,
    check_all,
    check_kinds,
)
from training.preferred import Buckets
from training.search import SEARCH_RANGES, SEARCHES
from zoo.family import Space

SAMPLERS = ("preferred", "preferred-plain", "uniform", "option-balanced")
STEPS = Range(int, 1, 10**9)
MIX_ALPHA = Range(float, 0, 100)  # a Beta distribution's parameter; 0 turns mixup/cutmix off
# every numeric setting's valid values: the dataclasses check them, the command line parses with them
TRAIN_RANGES = {"sandwich": Range(int, -1, 64), "crop_padding": Range(int, 0, 64), "random_erasing": PROBABILITY,
                "ema": PROBABILITY, "img_size": Range(int, 1, 4096), "in_chans": Range(int, 1, 16),
                "val_size": IMAGES, "epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "min_lr": MIN_LR,
                "warmup_epochs": WARMUP, "weight_decay": WEIGHT_DECAY, "label_smoothing": PROBABILITY,
                "mixup": MIX_ALPHA, "cutmix": MIX_ALPHA, "drop_path": PROBABILITY,
                "clip_grad": Range(float, 0, 1e6),  # 0: no clipping, as None
                "seed": SEED, "ckpt_every": STEPS, "log_every": STEPS, "workers": Range(int, 0, 256)}
FINETUNE_RANGES = {"epochs": Range(int, 1, 10_000), "batch_size": BATCH, "lr": LR, "min_lr": MIN_LR,
                   "warmup_epochs": WARMUP, "weight_decay": WEIGHT_DECAY, "label_smoothing": PROBABILITY,
                   "val_size": Range(int, 1, IMAGES.high),  # fine-tuning validates after every epoch
                   "distill_alpha": Range(float, 0, 1), "distill_temperature": Range(float, 0, 100, open_low=True),
                   "seed": SEED}
SELECT_RANGES = {"seed": SEED, "batch_size": Range(int, 1, 4096), "top_n": Range(int, 1, 1000), "chunk": BATCH}


@dataclass
class TrainConfig:
    out: str = "runs/train"
    space: str = "ladder"
    preferred: str | None = None  # preferred.json; required by the preferred sampler
    sampler: str = "preferred"  # Eq. 11; "preferred-plain" (uniform over the preferred set), "uniform", or
    # "option-balanced" (each decision's options trained alike, training.sampler)
    sandwich: int = -1  # k >= 0: train largest + smallest + k sampled archs per step
    distill: bool = False  # in-place distillation: the sandwich's largest path's predictions teach the others
    data: str = "fashion-mnist"
    img_size: int | None = None
    in_chans: int | None = None
    val_size: int | None = None
    epochs: float = 10.0
    batch_size: int = 128  # per process
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    augment: bool = True  # flips (small images) or the timm recipe (image folders)
    auto_augment: str | None = None  # e.g. rand-m9-mstd0.5-inc1 (image folders)
    crop_padding: int = 0  # random crops: zero-pad by this many pixels, crop back (in-memory data only)
    random_erasing: float = 0.0  # probability that an image gets a random rectangle of noise (timm's RandomErasing)
    ema: float = 0.0  # decay of an exponential moving average of the weights, which is then what is saved; 0: off
    drop_path: float = 0.1
    clip_grad: float | None = None
    amp: bool = True  # bf16 autocast, on CUDA only (on CPU it is ~2x slower for training)
    compile: bool = False
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 50
    workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_kinds(self)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.sampler.startswith("preferred") and not self.preferred:
            raise ValueError("the preferred sampler needs --preferred PATH (from `python -m training select`)")
        check_all(self, TRAIN_RANGES)
        if self.distill and self.sandwich < 0:
            raise ValueError("in-place distillation (--distill) needs the sandwich rule (--sandwich K, K >= 0): its "
                             "largest path is the teacher")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A run's config.json; an error naming it when it is missing or not one."""
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: is {path.parent} a training run directory?")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ValueError as e:  # not JSON, not UTF-8, or a setting out of its range
            raise ValueError(f"{path} is not a training run's config: {e}") from None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FinetuneConfig:
    model: str  # an exported model folder, or hf-hub:ORG/NAME
    data: str  # folder:PATH (any `training.data` source works)
    out: str = "runs/finetune"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: bool = True
    val_size: int | None = None
    distill: str | None = None  # a zoo folder or Hub id: its largest entry teaches
    distill_alpha: float = 0.5  # weight of the distillation loss (1 - alpha: the labels')
    distill_temperature: float = 1.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_kinds(self)
        check_all(self, FINETUNE_RANGES)


JOBS = Range(int, 1, 16)  # processes side by side, one thread each
TUNE_RANGES = {k: FINETUNE_RANGES[k] for k in ("epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay",
                                                 "label_smoothing", "seed")} | \
              {"crop_padding": Range(int, 0, 8), "jobs": JOBS}


@dataclass
class TuneConfig:
    """The settings of `python -m training tune` (training.tune): each zoo entry fine-tuned standalone from its
    supernet weights on the training split the zoo's supernet was trained on (flips and `crop_padding`-pixel crops)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: bool = True  # flips, and crops when crop_padding > 0 (in-memory sources: training.data)
    crop_padding: int = 2
    seed: int = 0
    jobs: int = 1  # entries tuned side by side, one process and one thread each
    progress: bool = True

    def __post_init__(self) -> None:
        check_kinds(self)
        check_all(self, TUNE_RANGES)

    def recipe(self) -> dict:
        """What decides the tuned weights (what a resumed tuning must match): every setting but jobs and progress."""
        return {k: v for k, v in asdict(self).items() if k not in ("jobs", "progress")}


PICK_RANGES = {"evaluations": SEARCH_RANGES["evaluations"], "population": SEARCH_RANGES["population"],
               "seed": SEARCH_RANGES["seed"], "top_n": SEARCH_RANGES["population"],
               "val_images": IMAGES,  # 0: every held-out image
               "bucket_ratio": Range(float, 1, 16, open_low=True)}


@dataclass
class PickConfig:
    """The settings of `python -m training pick` (training.pick)."""

    algorithm: str = "evolution"
    evaluations: int = 100  # distinct archs scored per bucket
    population: int = 20  # evolution's and aging's; the rest of their settings follow from it as `search` sets them
    top_n: int = 1  # entries per bucket
    val_images: int = 0  # 0: every held-out image
    seed: int = 0
    bucket_ratio: float | None = None  # each params bucket this many times the one before; None: the family's buckets

    def __post_init__(self) -> None:
        if self.algorithm not in SEARCHES:
            raise ValueError(f"algorithm must be one of {', '.join(SEARCHES)}, got {self.algorithm!r}")
        check_all(self, PICK_RANGES)


ZERO_COST_RANGES = {k: SELECT_RANGES[k] for k in ("seed", "batch_size", "top_n")} | \
    {k: SEARCH_RANGES[k] for k in ("evaluations", "population")}


@dataclass
class ZeroCostConfig:
    """PreNAS's zero-cost selector on a space without isomer tables (`training.zero_cost`)."""

    space: Space
    seed: int = 0  # the batch's draw and every arch's initialisation
    batch_size: int = 64  # images in each arch's one backward pass (PreNAS: 64)
    data: str = "gaussian"  # data-free (PreNAS), or a dataset source: a seeded labelled batch of its train split
    buckets: Buckets | None = None  # params buckets; None: the space's default
    top_n: int = 1  # archs kept per bucket
    evaluations: int = 200  # distinct archs each bucket's evolution scores
    population: int = 20
    progress: bool = True

    def __post_init__(self) -> None:
        check_all(self, ZERO_COST_RANGES)
        if self.buckets is None:
            self.buckets = Buckets.default(self.space, "params")
