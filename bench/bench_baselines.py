"""Hand-designed baselines trained here: what a practitioner would build instead of asking PreZoo for a model.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_baselines [--families cnn,resnet,mobilenet,vit] [--rungs 0,2]
        [--seeds 0] [--epochs 10] [--tune | --lr 3e-3] [--jobs 2] [--out runs/baselines]
    .venv/bin/python -m bench.bench_baselines --list          # the ladders: params and MACs of every rung

Four families, each a ladder from about 10K to over 2M parameters, all for 28x28 gray images and 10 classes:
- `cnn`: VGG-style, [conv3x3-BN-ReLU] x n per stage at 28 -> 14 -> 7 (max-pool between), global average pool,
  linear. Rung `w16-32-64-c2-2-1` is issue 23's reference net (35,674 params, 5.5M MACs, 91.20% reported there).
- `resnet`: timm's `ResNet` with `BasicBlock`, widths (w, 2w, 4w) at 28/14/7, d blocks per stage; adapted to 28x28
  as CIFAR ResNets are: one 3x3 stride-1 stem conv, no max-pool, no fourth stage.
- `mobilenet`: MobileNetV2-style inverted residuals through timm's EfficientNet builder (`decode_arch_def`), width
  and depth multipliers as timm's `_gen_mobilenet_v2` applies them; stem stride 1, so the stages sit at 28/14/7.
  The three convolutional families train channels-last (this machine's depthwise convs want it; dense ones lose
  nothing).
- `vit`: plain ViTs of PreZoo's `ladder` space (patch 4, head dim 32), uniform layers as DeiT builds them, trained
  standalone; the largest rung (embed 192, 6 heads) widens past the space's 128 to reach 2M parameters.

One recipe for every family ("standard, tuned"): AdamW (weight decay 0.05, none on biases and norms), PyTorch's
one-cycle schedule (cosine, 30% warm-up) peaking at the family's lr, label smoothing 0.1, random flips and 2-pixel
random crops, batch 128, `--epochs` (default 10) for all, one torch thread per model; trained on Fashion-MNIST's
55,000-image train split, validated on the 5,000 images held out of it with seed 0 (the split PreZoo's zoos hold
out; the last epoch's weights count, no early stopping), tested once on the 10,000 test images. Tuning gives every
family the same search effort: `--tune` trains each family's middle rung (index 2) at every lr of `--tune-lrs`
(default 1e-3, 3e-3, 1e-2) for `--tune-epochs` (default 2) and takes the lr with the best validation top-1; without
`--tune` every family trains at `--lr`. A family whose raw file already holds the same sweep (and whose sweep folder
is absent, as in a fresh checkout) trains at that sweep's choice without sweeping again, unless `--resweep`.

Resumable: each (family, rung, seed) trains in its own folder under `--out` (config.json, checkpoint.pt written
atomically after every epoch, result.json at the end); a rerun skips finished models and resumes unfinished ones
from their last epoch, and refuses a folder trained with other settings. `--jobs N` trains N models side by side,
each in its own process with one thread. Raw results, rebuilt after each model: bench/data/baselines/FAMILY.json
(params, MACs, train seconds, lr, validation and test top-1, per-image test correctness as packed bits for paired
McNemar tests against zoo entries, and the lr sweep). Latency: bench/bench_latency.py times these models and the
zoos' entries side by side.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet, round_channels
from timm.models.resnet import BasicBlock, ResNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine
from bench.report import DATA, pack_bits
from training.data import load_data, make_loader
from training.evaluate import tensor_batches
from training.train import param_groups
from training.workers import one_thread_pool
from zoo.families.vit.arch import ViTArch
from zoo.families.vit.model import ViT
from zoo.families.vit.space import BUILTIN_SPACES
from zoo.family import space_by_name
from zoo.io import atomic_write_bytes, atomic_write_text, held_folder, remove_stale_temporaries

IMG_SIZE, IN_CHANS, NUM_CLASSES = 28, 1, 10
BATCH = 128
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
CROP_PADDING = 2
SCHEDULE = "one-cycle (torch OneCycleLR defaults: cosine, 30% warm-up, beta1 cycled 0.95-0.85)"
SPLIT_SEED = 0  # the validation split PreZoo's zoos hold out: the same 5,000 images for every baseline and seed
TUNE_RUNG = 2  # each family's middle rung (of six)
EVAL_BATCH = 500
MAX_EPOCHS = 1000
MAX_JOBS = 64
MAX_SEED = 2**31 - 1


# -- the ladders ----------------------------------------------------------------------------------------------------


class VGG(nn.Sequential):
    """[conv3x3-BN-ReLU] x `convs[s]` at width `widths[s]` per stage, a 2x2 max-pool between stages, global average
    pool, linear head."""

    def __init__(self, widths: tuple[int, ...], convs: tuple[int, ...]) -> None:
        layers: list[nn.Module] = []
        chans = IN_CHANS
        for stage, (width, n) in enumerate(zip(widths, convs, strict=True)):
            if stage:
                layers.append(nn.MaxPool2d(2))
            for _ in range(n):
                layers += [nn.Conv2d(chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
                chans = width
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans, NUM_CLASSES))


def resnet(width: int, depth: int) -> nn.Module:
    """timm's ResNet (BasicBlock) at widths (w, 2w, 4w), `depth` blocks per stage, with a 28x28 stem."""
    # stem_type="deep" only sets the stem's output width to 2 * stem_width (the plain stem is 64 wide); the deep
    # stem itself (three convs, the first of stride 2) and the max-pool give way to one 3x3 stride-1 conv
    model = ResNet(BasicBlock, (depth,) * 3, num_classes=NUM_CLASSES, in_chans=IN_CHANS,
                   channels=(width, 2 * width, 4 * width), stem_type="deep", stem_width=width // 2)
    model.conv1 = nn.Conv2d(IN_CHANS, width, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits its convs
    model.maxpool = nn.Identity()
    model.layer4 = nn.Identity()  # timm's forward runs layer1..layer4: three stages here
    return model


# MobileNetV2's stages up to its 96-wide one, for 28x28 (stem stride 1): 28, 28, 14, 7, 7; the head conv half of
# ImageNet's 1280, as the net holds half of MobileNetV2's stages
MOBILENET_ARCH = (("ds_r1_k3_s1_c16",), ("ir_r2_k3_s1_e6_c24",), ("ir_r3_k3_s2_e6_c32",), ("ir_r4_k3_s2_e6_c64",),
                  ("ir_r3_k3_s1_e6_c96",))
MOBILENET_STEM, MOBILENET_HEAD = 32, 640


def mobilenet(width_mult: float, depth_mult: float) -> nn.Module:
    """MobileNetV2-style through timm's EfficientNet builder, channels and repeats scaled as timm scales them."""
    chans = partial(round_channels, multiplier=width_mult)
    model = EfficientNet(decode_arch_def([list(s) for s in MOBILENET_ARCH], depth_multiplier=depth_mult),
                         num_classes=NUM_CLASSES, in_chans=IN_CHANS, stem_size=MOBILENET_STEM,
                         num_features=chans(MOBILENET_HEAD), round_chs_fn=chans, act_layer=nn.ReLU6)
    model.conv_stem.stride = (1, 1)  # timm's stem has stride 2; same weights and padding at stride 1
    return model


def vit(embed: int, depth: int, heads: int, mlp_ratio: float) -> nn.Module:
    """A uniform ViT with the `ladder` space's patch, head dim, pooling and norms (zoo.families.vit.model.ViT)."""
    return ViT(BUILTIN_SPACES["ladder"], ViTArch(embed, depth, (heads,) * depth, (mlp_ratio,) * depth))


@dataclass(frozen=True)
class Rung:
    family: str
    name: str
    build: Callable[[], nn.Module]


def _cnn(widths: tuple[int, ...], convs: tuple[int, ...]) -> Rung:
    return Rung("cnn", f"w{'-'.join(map(str, widths))}-c{'-'.join(map(str, convs))}", partial(VGG, widths, convs))


def _resnet(width: int, depth: int) -> Rung:
    return Rung("resnet", f"w{width}-d{depth}", partial(resnet, width, depth))


def _mobilenet(width_mult: float, depth_mult: float) -> Rung:
    return Rung("mobilenet", f"m{width_mult:g}-d{depth_mult:g}", partial(mobilenet, width_mult, depth_mult))


def _vit(embed: int, depth: int, heads: int, mlp_ratio: float) -> Rung:
    return Rung("vit", f"e{embed}-d{depth}-h{heads}-r{mlp_ratio:g}", partial(vit, embed, depth, heads, mlp_ratio))


REFERENCE_CNN = "w16-32-64-c2-2-1"
LADDERS: dict[str, tuple[Rung, ...]] = {
    "cnn": (_cnn((8, 16, 32), (2, 2, 1)), _cnn((16, 32, 64), (2, 2, 1)), _cnn((24, 48, 96), (2, 2, 2)),
            _cnn((32, 64, 128), (2, 2, 2)), _cnn((64, 128, 256), (2, 2, 2)), _cnn((96, 192, 384), (2, 2, 2))),
    "resnet": (_resnet(6, 1), _resnet(12, 1), _resnet(16, 2), _resnet(32, 2), _resnet(48, 2), _resnet(64, 2)),
    "mobilenet": (_mobilenet(0.25, 0.25), _mobilenet(0.35, 0.5), _mobilenet(0.5, 1.0), _mobilenet(1.0, 1.0),
                  _mobilenet(1.5, 1.0), _mobilenet(2.0, 1.0)),
    "vit": (_vit(32, 1, 1, 2.0), _vit(64, 1, 2, 2.0), _vit(64, 2, 2, 2.0), _vit(128, 2, 4, 2.0), _vit(128, 6, 4, 4.0),
            _vit(192, 6, 6, 4.0)),
}
FAMILIES = tuple(LADDERS)
CHANNELS_LAST = frozenset({"cnn", "resnet", "mobilenet", "mbconv", "hytra"})


def rung_of(family: str, name: str) -> Rung:
    for rung in LADDERS[family]:
        if rung.name == name:
            return rung
    raise ValueError(f"{family} has no rung {name!r}; its rungs: {[r.name for r in LADDERS[family]]}")


def standalone(arch_json: str) -> nn.Module:
    """A PreZoo arch ({"space": NAME, "arch": {...}}) as its family's standalone model (the Hub class), freshly
    initialised: what training it from scratch starts from."""
    doc = json.loads(arch_json)
    family, space = space_by_name(doc["space"])
    return family.pretrained(space=space.to_dict(), arch=doc["arch"])


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_of(model: nn.Module) -> int:
    """Multiply-accumulates of one 28x28 image, as FlopCounterMode counts them (halved), in eval mode."""
    was_training = model.training
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.zeros(1, IN_CHANS, IMG_SIZE, IMG_SIZE))
    model.train(was_training)
    return counter.get_total_flops() // 2


# -- one model: train, resume, evaluate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One model to train; every field but `folder`, `stop_after` and `log_every` is part of its identity (a folder
    trained with other values is refused, not continued)."""

    family: str
    rung: str
    seed: int
    epochs: int
    lr: float
    lr_source: str  # "fixed" (--lr), "tuned" (the sweep's choice) or "sweep" (a run of the sweep)
    data: str
    val_size: int
    folder: Path
    stop_after: int | None = None  # epochs to train in this invocation (a rerun resumes)
    log_every: int = 100
    arch: str | None = None  # a PreZoo space's arch instead of a ladder's rung: {"space": NAME, "arch": {...}} as JSON

    @property
    def label(self) -> str:
        return f"{self.family} {self.rung} s{self.seed}" + (f" lr {self.lr:g}" if self.lr_source == "sweep" else "")

    def build(self) -> nn.Module:
        """The untrained model: the ladder's rung, or the arch as its family's standalone model."""
        return standalone(self.arch) if self.arch else rung_of(self.family, self.rung).build()

    def identity(self) -> dict:
        return {**({"arch": json.loads(self.arch)} if self.arch else {}),
                "family": self.family, "rung": self.rung, "seed": self.seed, "epochs": self.epochs, "lr": self.lr,
                "lr_source": self.lr_source, "data": self.data, "val_size": self.val_size, "split_seed": SPLIT_SEED,
                "batch": BATCH, "weight_decay": WEIGHT_DECAY, "label_smoothing": LABEL_SMOOTHING,
                "augment": augments(self.data), "crop_padding": CROP_PADDING if augments(self.data) else 0,
                "schedule": SCHEDULE, "optimizer": "AdamW"}


def augments(data: str) -> bool:
    """Flips and crops, except on synthetic data (noise: nothing to augment, and load_data refuses it)."""
    return not data.startswith("synthetic:")


def check_identity(job: Job) -> None:
    """Write the folder's config.json, or refuse a folder whose run had other settings."""
    path = job.folder / "config.json"
    want = job.identity()
    if path.exists():
        had = json.loads(path.read_text())
        changed = {k: (had.get(k), v) for k, v in want.items() if had.get(k) != v}
        if changed:
            raise ValueError(f"{job.folder} holds a run with other settings (setting: was, now): {changed}; rerun "
                             "with its settings or give another --out")
    else:
        atomic_write_text(path, json.dumps(want, indent=1) + "\n")


def layout(job: Job) -> torch.memory_format:
    return torch.channels_last if job.family in CHANNELS_LAST else torch.contiguous_format


@torch.inference_mode()
def right_of(model: nn.Module, batches, memory: torch.memory_format) -> np.ndarray:
    """Which images of the batches the model classifies right."""
    model.eval()
    return torch.cat([model(x.contiguous(memory_format=memory)).argmax(1) == y for x, y in batches]).numpy()


def save_checkpoint(job: Job, epoch: int, model, opt, sched, history: list[dict]) -> None:
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "history": history}, buf)
    atomic_write_bytes(job.folder / "checkpoint.pt", buf.getvalue())


def load_model(build: Callable[[], nn.Module], folder: Path) -> nn.Module:
    """The trained model in `folder` (its last checkpoint) of the architecture `build` makes, in eval mode."""
    model = build()
    model.load_state_dict(torch.load(folder / "checkpoint.pt", weights_only=True)["model"])
    return model.eval()


def fmt_time(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train_model(job: Job) -> dict | None:
    """Train `job` to the end (or `stop_after` more epochs) from its last checkpoint; its result, or None if stopped.
    Holds the folder (flock) throughout: a second process on the same model waits, then finds it finished."""
    torch.set_num_threads(1)
    job.folder.mkdir(parents=True, exist_ok=True)
    with held_folder(job.folder):
        remove_stale_temporaries(job.folder)
        check_identity(job)
        if (job.folder / "result.json").exists():
            return json.loads((job.folder / "result.json").read_text())
        return _train(job)


def train_epoch(job: Job, model: nn.Module, opt, sched, train, epoch: int, steps: int) -> float:
    """One epoch in the order that (seed, epoch) fixes, a progress line every `log_every` steps; the mean loss."""
    model.train()
    memory, t0, losses = layout(job), time.perf_counter(), []
    for i, (x, y) in enumerate(make_loader(train, BATCH, shuffle=True, seed=job.seed, epoch=epoch)):
        loss = F.cross_entropy(model(x.contiguous(memory_format=memory)), y, label_smoothing=LABEL_SMOOTHING)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (i + 1) % job.log_every == 0:
            per_step = (time.perf_counter() - t0) / (i + 1)
            left = (job.epochs - epoch) * steps - i - 1
            print(f"[{job.label}] epoch {epoch + 1}/{job.epochs} step {i + 1}/{steps} loss {loss.item():.3f} "
                  f"{per_step:.3f} s/step ETA {fmt_time(left * per_step)}", flush=True)
    return float(np.mean(losses))


def _train(job: Job) -> dict | None:
    split = dict(img_size=IMG_SIZE, in_chans=IN_CHANS, val_size=job.val_size, seed=SPLIT_SEED)
    aug = augments(job.data)
    train, _ = load_data(job.data, "train", augment=aug, random_crop_padding=CROP_PADDING if aug else 0, **split)
    val_batches = tensor_batches(load_data(job.data, "val", **split)[0], EVAL_BATCH)
    memory = layout(job)
    torch.manual_seed(job.seed)
    model = job.build().to(memory_format=memory)
    params, macs = params_of(model), macs_of(model)
    opt = torch.optim.AdamW(param_groups(model, WEIGHT_DECAY), lr=job.lr)
    steps = math.ceil(len(train) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=job.lr, total_steps=job.epochs * steps)
    start, history = 0, []
    if (job.folder / "checkpoint.pt").exists():
        ckpt = torch.load(job.folder / "checkpoint.pt", weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        start, history = ckpt["epoch"], ckpt["history"]
        print(f"[{job.label}] resuming after epoch {start}/{job.epochs}", flush=True)
    last = job.epochs if job.stop_after is None else min(job.epochs, start + job.stop_after)
    print(f"[{job.label}] {params:,} params, {macs / 1e6:.2f}M MACs, lr {job.lr:g}, epochs {start + 1}..{last} of "
          f"{job.epochs}, {steps} steps each", flush=True)
    for epoch in range(start, last):
        t0 = time.perf_counter()
        loss = train_epoch(job, model, opt, sched, train, epoch, steps)
        seconds = time.perf_counter() - t0
        val_top1 = 100 * float(right_of(model, val_batches, memory).mean())
        history.append({"epoch": epoch + 1, "loss": round(loss, 5), "val_top1": round(val_top1, 3),
                        "seconds": round(seconds, 2)})
        save_checkpoint(job, epoch + 1, model, opt, sched, history)
        print(f"[{job.label}] epoch {epoch + 1}/{job.epochs} loss {loss:.3f} val {val_top1:.2f}% {seconds:.0f} s "
              f"ETA {fmt_time((job.epochs - epoch - 1) * seconds)}", flush=True)
    if len(history) < job.epochs:
        return None
    test, _ = load_data(job.data, "test", img_size=IMG_SIZE, in_chans=IN_CHANS)
    right = right_of(model, tensor_batches(test, EVAL_BATCH), memory)
    result = {**job.identity(), "params": params, "macs": macs, "epochs": job.epochs,
              "train_seconds": round(sum(h["seconds"] for h in history), 1), "val_top1": history[-1]["val_top1"],
              "val_images": sum(len(y) for _, y in val_batches), "test_top1": round(100 * float(right.mean()), 3),
              "test_images": len(right), "test_right": pack_bits(right), "history": history}
    atomic_write_text(job.folder / "result.json", json.dumps(result, indent=1) + "\n")
    print(f"[{job.label}] done: val {result['val_top1']:.2f}%, test {result['test_top1']:.2f}%, "
          f"{fmt_time(result['train_seconds'])} training", flush=True)
    return result


# -- the raw results --------------------------------------------------------------------------------------------------


def tune(family: str, sweep: list[Job]) -> dict | None:
    """The family's lr sweep from its finished runs: validation top-1 per lr and the best lr (the smaller on a tie),
    recorded as tune/FAMILY.json under --out for the raw file; None while a run is unfinished."""
    runs = [job for job in sweep if job.family == family]
    if not all((job.folder / "result.json").exists() for job in runs):
        return None
    results = sorted((json.loads((job.folder / "result.json").read_text()) for job in runs), key=lambda r: r["lr"])
    best = max(results, key=lambda r: (r["val_top1"], -r["lr"]))
    tuning = {"rung": best["rung"], "epochs": best["epochs"], "seed": best["seed"], "chosen_lr": best["lr"],
              "val_top1": {f"{r['lr']:g}": r["val_top1"] for r in results}}
    atomic_write_text(runs[0].folder.parent.parent / f"{family}.json", json.dumps(tuning, indent=1) + "\n")
    return tuning


def committed_tuning(path: Path, family: str, args: argparse.Namespace, common: dict) -> dict | None:
    """The raw file's lr sweep when it is the one `args` asks for (same rung, epochs, lrs, data and validation size):
    a fresh checkout, whose run folders are gone, continues a ladder at the committed choice instead of sweeping
    again."""
    if not path.exists():
        return None
    held = json.loads(path.read_text())
    tuning, first = held.get("tuning"), next(iter(held.get("models", [])), {})
    same = tuning and tuning["rung"] == LADDERS[family][TUNE_RUNG].name and tuning["epochs"] == args.tune_epochs \
        and {float(lr) for lr in tuning["val_top1"]} == set(args.tune_lrs) \
        and first.get("data") == common["data"] and first.get("val_size") == common["val_size"]
    return tuning if same else None


def tuning_of(out: Path, family: str) -> dict | None:
    path = out / "tune" / f"{family}.json"
    return json.loads(path.read_text()) if path.exists() else None


RECIPE_KEYS = ("epochs", "lr", "data", "val_size", "split_seed", "batch", "weight_decay", "label_smoothing", "augment",
               "crop_padding", "schedule", "optimizer")  # what every model of one raw file shares


def recipe_change(held: dict, other: dict) -> str | None:
    """The first recipe setting in which `other` differs from `held` (None: one recipe)."""
    return next((k for k in RECIPE_KEYS if other[k] != held[k]), None)


def write_raw(raw_dir: Path, out: Path, family: str, command: str, name: str | None = None, kind: str = "baselines",
              **about) -> Path:
    """bench/data/baselines/FAMILY.json (or `name`.json) from every finished model of the family under `out`, added
    to the models (and lr sweep) the file already holds: a model trained again replaces its own (same rung and seed),
    and the others stay, so that a fresh checkout with no run folders adds rungs without losing the committed ones.
    `about` adds top-level fields."""
    path = raw_dir / f"{name or family}.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    models = {(m["rung"], m["seed"]): m for m in before.get("models", [])}
    for result in sorted((out / family).glob("*/result.json")):
        model = json.loads(result.read_text())
        models[model["rung"], model["seed"]] = model
    first = next(iter(models.values()), None)
    for model in models.values():
        if key := recipe_change(first, model):
            raise SystemExit(f"{path}: its {model['rung']} (seed {model['seed']}) was trained with another {key} "
                             f"than the rest; one file holds one recipe (give another --raw-dir)")
    doc = {"kind": kind, "family": family, **about, "machine": machine(), "command": command,
           "tuning": tuning_of(out, family) or before.get("tuning"),
           "models": sorted(models.values(), key=lambda m: (m["params"], m["seed"]))}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def check_recipes(raw_dir: Path, jobs: list[Job]) -> None:
    """Before any training: a model that its family's raw file would refuse once trained (write_raw: one recipe a
    file) is refused now, not after hours. A folder that holds a run is left to check_identity, which names what
    changed."""
    paths = {raw_dir / f"{family}.json" for family in {job.family for job in jobs}}
    held = {path.stem: next(iter(json.loads(path.read_text()).get("models", [])), None)
            for path in paths if path.exists()}
    for job in jobs:
        first, want = held.get(job.family), job.identity()
        if first is None or (job.folder / "config.json").exists() or not (key := recipe_change(first, want)):
            continue
        raise SystemExit(f"{raw_dir / f'{job.family}.json'}: {job.label} would be trained with another {key} "
                         f"({want[key]!r}) than the models it holds ({first[key]!r}); one file holds one recipe "
                         "(train with its settings, or give another --raw-dir)")


# -- the command ------------------------------------------------------------------------------------------------------


def run_jobs(jobs: list[Job], workers: int, done: Callable[[Job, dict | None], None]) -> list[str]:
    """Train the jobs, `workers` at a time (each its own process with one thread; in this process when 1); calls
    `done` after each; the failures, as messages."""
    failures = []
    if workers == 1:
        for job in jobs:
            try:
                done(job, train_model(job))
            except Exception as e:  # one model's failure must not stop the ladder
                failures.append(f"{job.label}: {type(e).__name__}: {e}")
        return failures
    with one_thread_pool(workers) as pool:
        futures = {pool.submit(train_model, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                done(job, future.result())
            except Exception as e:
                failures.append(f"{job.label}: {type(e).__name__}: {e}")
    return failures


def bounded(kind: Callable, lo: float, hi: float) -> Callable[[str], object]:
    def parse(text: str):
        value = kind(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} lies outside [{lo:g}, {hi:g}]")
        return value
    return parse


def _listed(kind: Callable) -> Callable[[str], list]:
    return lambda text: [kind(t) for t in text.split(",") if t]


def select_rungs(family: str, picks: list[str] | None) -> list[Rung]:
    """`--rungs` items are indices into every chosen ladder or rung names; names of other families are skipped."""
    ladder = LADDERS[family]
    if picks is None:
        return list(ladder)
    chosen = []
    for pick in picks:
        if pick.isdigit():
            if int(pick) >= len(ladder):
                raise SystemExit(f"--rungs: {family} has rungs 0..{len(ladder) - 1}, not {pick}")
            chosen.append(ladder[int(pick)])
        else:
            chosen += [r for r in ladder if r.name == pick]
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", type=_listed(str), default=list(FAMILIES), help=f"of {', '.join(FAMILIES)}")
    ap.add_argument("--rungs", type=_listed(str), default=None, help="indices (0 = smallest) or rung names")
    ap.add_argument("--seeds", type=_listed(bounded(int, 0, MAX_SEED)), default=[0])
    ap.add_argument("--epochs", type=bounded(int, 1, MAX_EPOCHS), default=10)
    ap.add_argument("--lr", type=bounded(float, 1e-6, 1.0), default=3e-3, help="peak lr without --tune")
    ap.add_argument("--tune", action="store_true", help="choose each family's lr by the sweep first")
    ap.add_argument("--tune-lrs", type=_listed(bounded(float, 1e-6, 1.0)), default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--tune-epochs", type=bounded(int, 1, MAX_EPOCHS), default=2)
    ap.add_argument("--resweep", action="store_true",
                    help="with --tune: sweep again even where the raw file holds the same sweep's choice")
    ap.add_argument("--jobs", type=bounded(int, 1, MAX_JOBS), default=1, help="models trained side by side")
    ap.add_argument("--out", type=Path, default=Path("runs/baselines"))
    ap.add_argument("--raw-dir", type=Path, default=DATA / "baselines")
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist, or synthetic:<n> for smoke tests")
    ap.add_argument("--val-size", type=bounded(int, 1, 10**7), default=5000)
    ap.add_argument("--stop-after", type=bounded(int, 1, MAX_EPOCHS), default=None,
                    help="train each model at most this many epochs now (a rerun resumes): slices a long run")
    ap.add_argument("--log-every", type=bounded(int, 1, 10**6), default=100, help="steps between progress lines")
    ap.add_argument("--list", action="store_true", help="print the ladders (params, MACs) and exit")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown or not args.families:
        ap.error(f"--families: unknown {unknown}; choose among {', '.join(FAMILIES)}")
    names = {r.name for f in args.families for r in LADDERS[f]}
    if strays := [p for p in args.rungs or () if not p.isdigit() and p not in names]:
        ap.error(f"--rungs: no chosen family has rungs {strays} (see --list)")
    return args


def print_ladders(families: list[str], picks: list[str] | None) -> None:
    print("| family | rung | params | MACs |\n|---|---|---:|---:|")
    for family in families:
        for rung in select_rungs(family, picks):
            model = rung.build()
            print(f"| {family} | {rung.name} | {params_of(model):,} | {macs_of(model) / 1e6:.2f}M |", flush=True)


def choose_lrs(args: argparse.Namespace, common: dict) -> tuple[dict[str, float], list[str]]:
    """Each family's lr: `--lr`, or with `--tune` the sweep's choice (run first, or resumed); a family whose sweep is
    unfinished (`--stop-after`, a failure) gets none and trains nothing yet. Also the sweep's failures."""
    if not args.tune:
        return {f: args.lr for f in args.families}, []
    committed = {} if args.resweep else {f: t for f in args.families
                                         if not (args.out / "tune" / f).exists()
                                         and (t := committed_tuning(args.raw_dir / f"{f}.json", f, args, common))}
    sweep = [Job(f, LADDERS[f][TUNE_RUNG].name, 0, args.tune_epochs, lr, "sweep",
                 folder=args.out / "tune" / f / f"{LADDERS[f][TUNE_RUNG].name}-lr{lr:g}-s0", **common)
             for f in args.families if f not in committed for lr in sorted(set(args.tune_lrs))]
    failures = run_jobs(sweep, args.jobs, lambda job, result: None)
    lrs = {}
    for f in args.families:
        if f in committed:
            lrs[f] = committed[f]["chosen_lr"]
            print(f"{f}: lr {lrs[f]:g}, the committed sweep's choice in {args.raw_dir / f'{f}.json'} (top-1 by lr: "
                  f"{committed[f]['val_top1']}; --resweep runs it again)", flush=True)
        elif (tuning := tune(f, sweep)) is None:
            print(f"{f}: the lr sweep is unfinished; rerun to finish it and train the ladder", flush=True)
        else:
            lrs[f] = tuning["chosen_lr"]
            print(f"{f}: lr {lrs[f]:g} chosen on validation (top-1 by lr: {tuning['val_top1']})", flush=True)
    return lrs, failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.list:
        print_ladders(args.families, args.rungs)
        return 0
    command = "python -m bench.bench_baselines " + " ".join(sys.argv[1:] if argv is None else argv)
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    common = dict(data=args.data, val_size=args.val_size, stop_after=args.stop_after, log_every=args.log_every)
    lrs, failures = choose_lrs(args, common)
    jobs = [Job(f, r.name, s, args.epochs, lrs[f], "tuned" if args.tune else "fixed",
                folder=args.out / f / f"{r.name}-s{s}", **common)
            for f in lrs for r in select_rungs(f, args.rungs) for s in args.seeds]
    check_recipes(args.raw_dir, jobs)
    finished = []

    def done(job: Job, result: dict | None) -> None:
        finished.append(job)
        if result is not None:
            write_raw(args.raw_dir, args.out, job.family, command)
        print(f"{len(finished)}/{len(jobs)} models {'done' if result else 'stopped'}", flush=True)

    failures += run_jobs(jobs, args.jobs, done)
    for message in failures:
        print(f"FAILED {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
