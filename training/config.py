"""The settings of `python -m training train` and `finetune`, as plain dataclasses (no torch): the command line
builds its options from their fields and defaults, so `--help` answers without loading the trainers."""

from __future__ import annotations

from dataclasses import dataclass, fields

SAMPLERS = ("preferred", "preferred-plain", "uniform")


@dataclass
class TrainConfig:
    out: str = "runs/train"
    space: str = "ladder"
    preferred: str | None = None  # preferred.json; required by the preferred sampler
    sampler: str = "preferred"  # Eq. 11; "preferred-plain" (uniform over the preferred set) or "uniform"
    sandwich: int = -1  # k >= 0: train largest + smallest + k sampled archs per step
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
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.sampler != "uniform" and not self.preferred:
            raise ValueError("the preferred sampler needs --preferred PATH (from `python -m training select`)")
        for k in ("epochs", "lr", "batch_size", "ckpt_every", "log_every"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
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
        for k in ("epochs", "batch_size", "lr", "distill_temperature"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)!r}")
        if not 0 <= self.distill_alpha <= 1:
            raise ValueError(f"distill_alpha must lie in [0, 1], got {self.distill_alpha!r}")
