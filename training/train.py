"""One-shot supernet training of any model family (`zoo.family`): preferred (PreNAS) or uniform (AutoFormer) sampling.

Checkpoints (one file, `checkpoint.pt`, with the sha256 of its payload in a header line) are written
atomically every `ckpt_every` steps and at the end; `resume` continues bit-for-bit: the arch of a step and the data
order of an epoch are functions of (seed, step/epoch), and the RNG state is saved. Multi-process via
`torchrun` (DDP; gloo on CPU, NCCL on GPU): every rank trains the same arch on its shard.

The one-shot recipe of OFA, BigNAS and AttentiveNAS, each part a setting (off by default, so older runs resume as
they were): the sandwich rule (`sandwich`), in-place distillation (`distill`: the largest path's predictions, not
the labels, teach the other paths of the step; the largest learns from the labels), random crops (`crop_padding`)
and random erasing (`random_erasing`, timm's) on top of flips, and an exponential moving average of the weights
(`ema`, torch's `AveragedModel`), which is what `supernet.safetensors` then holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from training.checks import json_text, write_json
from training.config import TrainConfig
from training.data import load_data, make_loader
from training.preferred import load_preferred
from training.sampler import OptionBalancedSampler, PreferredSampler, UniformSampler, sandwich
from zoo.family import Arch, Family, Space, Supernet, space_by_name
from zoo.io import atomic_write_bytes, atomic_write_text, remove_stale_temporaries


def lr_at(cfg: TrainConfig, step: int, total: int, warmup: int) -> float:
    """Linear warmup from 0, then cosine from lr to min_lr."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and the class/position tokens (the usual ViT exemptions)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() <= 1 or name in ("cls_token", "pos_embed") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _dist_env() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def path_sampler(cfg: TrainConfig, family: Family, space: Space):
    """The run's paths per step, as a function of the step (stateless: a replay draws what training drew)."""
    if cfg.sampler.startswith("preferred"):
        pref_space, entries = load_preferred(cfg.preferred)
        if pref_space.hash != space.hash:
            raise ValueError(f"{cfg.preferred} was selected on space {pref_space.name} [{pref_space.hash}], "
                             f"not {space.name} [{space.hash}]")
        archs = [family.arch_from_dict(e["arch"]) for e in entries]
        sample = PreferredSampler(archs, cfg.seed, balanced=cfg.sampler == "preferred")
        largest = max(archs, key=lambda a: family.params(space, a))
        smallest = min(archs, key=lambda a: family.params(space, a))
    else:
        sample = (OptionBalancedSampler if cfg.sampler == "option-balanced" else UniformSampler)(space, cfg.seed)
        smallest, largest = family.extreme_archs(space)
    if cfg.sandwich >= 0:
        return sandwich(sample, largest, smallest, cfg.sandwich)
    return lambda step: [sample(step)]


class Checkpoint:
    """One file, `checkpoint.pt`: a header line (format, step, the payload's sha256 and size), then the
    torch-saved state (weights, optimizer, step, RNG). One file means one atomic rename: a kill at any instant
    leaves either the previous checkpoint or the new one, both verifiable, never a half-committed pair."""

    MAGIC = b"PREZOO-CHECKPOINT 1 "

    def __init__(self, out: Path) -> None:
        self.path = out / "checkpoint.pt"

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getvalue()
        header = {"step": state["step"], "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        atomic_write_bytes(self.path, self.MAGIC + json_text(header, str(self.path), indent=None).encode() + b"\n"
                           + payload)

    def header(self) -> dict | None:
        """The header (step, sha256, bytes) without reading the weights; None if there is no checkpoint yet."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as f:
            return self._parse_header(f.readline(4096))

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        line, _, payload = data.partition(b"\n")
        header = self._parse_header(line + b"\n")
        digest = hashlib.sha256(payload).hexdigest()
        if len(payload) != header["bytes"] or digest != header["sha256"]:
            raise ValueError(f"{self.path} is corrupt: sha256 {digest[:12]}… of {len(payload):,} bytes but its header "
                             f"records {header['sha256'][:12]}… of {header['bytes']:,}; delete the run directory or "
                             f"restore the file")
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)

    def _parse_header(self, line: bytes) -> dict:
        try:
            if not (line.startswith(self.MAGIC) and line.endswith(b"\n")):
                raise ValueError
            header = json.loads(line[len(self.MAGIC):])
            if not (isinstance(header, dict) and {"step", "sha256", "bytes"} <= header.keys()):
                raise ValueError
        except ValueError:
            raise ValueError(f"{self.path} is not a PreZoo checkpoint of this version (no valid header line); "
                             f"delete the run directory or use another --out") from None
        return header


RUN_IDENTITY = ("space", "sampler", "seed", "data")  # another value is another run: never continued
RESULT_NEUTRAL = ("out", "progress", "log_every", "ckpt_every")  # resumes are exact: these change no weight


def resumable(out: Path, saved: TrainConfig, cfg: TrainConfig, step: int, allow_changed_settings: bool) -> dict:
    """The settings `cfg` changes from the checkpoint's, {name: [saved, new]}, when continuing under them is
    allowed; otherwise ValueError naming them. Every setting but RESULT_NEUTRAL changes the trained weights (epochs
    and lr reshape the schedule, workers the augmentation draws), so a resume with new flags is a new experiment,
    and config.json must say which."""
    changed = {f.name: [getattr(saved, f.name), getattr(cfg, f.name)] for f in fields(TrainConfig)
               if f.name not in RESULT_NEUTRAL and getattr(saved, f.name) != getattr(cfg, f.name)}
    if identity := [k for k in RUN_IDENTITY if k in changed]:
        raise ValueError(f"{out} holds a run of another {', '.join(identity)} ({describe_changes(changed)}); "
                         f"use another --out")
    if changed and not allow_changed_settings:
        raise ValueError(f"{out} was trained to step {step} with other settings ({describe_changes(changed)}): "
                         f"repeat its own settings (its config.json) to resume, pass --allow-changed-settings to "
                         f"continue under the new ones, or use another --out")
    return changed


def describe_changes(changed: dict) -> str:
    return ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in changed.items())


def truncate_log(log: Path, step: int) -> None:
    """Drop log records past `step`: after a resume the log reads like the uninterrupted run's."""
    if log.exists():
        kept = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(log, "".join(f"{line}\n" for line in kept))


def train(cfg: TrainConfig, allow_changed_settings: bool = False) -> Path:
    """Train (or resume) a supernet; returns the run directory. A resume under settings that change the result is
    refused unless `allow_changed_settings` (see `resumable`)."""
    rank, world, device = _dist_env()
    out = Path(cfg.out)
    family, space = space_by_name(cfg.space)
    sample = path_sampler(cfg, family, space)
    data, info = load_data(cfg.data, "train", img_size=cfg.img_size or space.img_size,
                           in_chans=cfg.in_chans or space.in_chans, augment=cfg.augment, val_size=cfg.val_size,
                           seed=cfg.seed, auto_augment=cfg.auto_augment, random_crop_padding=cfg.crop_padding)
    # synthetic labels (10 classes) may feed any wider head: they are for throughput runs
    fits = info.num_classes <= space.num_classes if info.name == "synthetic" else info.num_classes == space.num_classes
    if not fits:
        raise ValueError(f"data {cfg.data} has {info.num_classes} classes but space {space.name} has "
                         f"{space.num_classes}")
    steps_per_epoch = len(data) // (cfg.batch_size * world)
    total = max(1, int(cfg.epochs * steps_per_epoch))
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    torch.manual_seed(cfg.seed)
    model = family.supernet(space, drop_path_rate=cfg.drop_path).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    ema = weight_average(model, cfg.ema)
    ckpt = Checkpoint(out)
    state = ckpt.load()
    step, changed = 0, {}
    if state is not None:
        step = state["step"]
        changed = resumable(out, TrainConfig.from_dict(state["config"]), cfg, step, allow_changed_settings)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:  # else (--ema added on a resume) the average starts here
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
    if rank == 0:  # config.json: the settings training goes on under (resumes compare with the checkpoint's copy)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", asdict(cfg))
        # what a kill left behind: unrenamed temp files, log records past the checkpoint
        remove_stale_temporaries(out)
        truncate_log(out / "log.jsonl", step)
        if state is not None:
            print(f"resuming {out} from step {step} of {total}"
                  + (f" with changed settings: {describe_changes(changed)}" if changed else ""), flush=True)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    run = torch.compile(ddp) if cfg.compile else ddp
    mix = _mixup(cfg, space.num_classes)
    erase = _erasing(cfg, device)
    log = (out / "log.jsonl").open("a") if rank == 0 else None
    if log and changed:
        log.write(json_text({"step": step, "event": "settings changed", "changed": changed, "time": time.time()},
                            log.name, indent=None) + "\n")
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not cfg.progress or rank != 0)
    t_last, seen = time.perf_counter(), 0
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        loader = make_loader(data, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, drop_last=True,
                             num_workers=cfg.workers, start_batch=offset, rank=rank, world_size=world)
        for x, y in loader:
            if step >= total:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if erase is not None:
                random.seed(cfg.seed * 1_000_003 + step)  # timm draws the rectangles from `random`: per step, resumable
                x = erase(x)
            lr = lr_at(cfg, step, total, warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = train_step(run, opt, x, y, sample(step), cfg, mix, device)
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            seen += len(x) * world
            bar.update(1)
            if log and (step % cfg.log_every == 0 or step == total):
                now = time.perf_counter()
                rec = {"step": step, "epoch": round(step / steps_per_epoch, 3), "lr": lr, "loss": loss,
                       "img_per_s": round(seen / (now - t_last), 1), "time": time.time()}
                log.write(json_text(rec, log.name, indent=None) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{loss:.3f}")
                t_last, seen = now, 0
            if step % cfg.ckpt_every == 0 or step == total:
                if rank == 0:
                    ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                               "config": asdict(cfg), "rng": torch.get_rng_state(),
                               **({"ema": ema.state_dict()} if ema is not None else {}),
                               **({"cuda_rng": torch.cuda.get_rng_state()} if device.type == "cuda" else {})})
                if world > 1:
                    dist.barrier()
    bar.close()
    if log:
        log.close()
    if rank == 0:
        save_supernet(model if ema is None else ema.module, out / "supernet.safetensors",
                      {"steps": str(total), **({"ema": str(cfg.ema)} if ema is not None else {})})
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


def save_supernet(model: Supernet, path: Path, metadata: dict[str, str]) -> None:
    """Supernet weights as safetensors (atomic), with its family and space in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"family": model.space.family, "space": model.space.to_json(), **metadata}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights and buffers (None when `decay` is 0): the weights a sampled
    path inherits then average over many steps' updates of the paths that share them."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _erasing(cfg: TrainConfig, device: torch.device):
    if not cfg.random_erasing:
        return None
    from timm.data.random_erasing import RandomErasing

    # "pixel": per-pixel normal noise, the scale of the normalised images it lands in
    return RandomErasing(cfg.random_erasing, mode="pixel", device=device.type)


def _mixup(cfg: TrainConfig, num_classes: int):
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                 num_classes=num_classes)


def train_step(model, opt, x, y, archs: list[Arch], cfg: TrainConfig, mix, device) -> float:
    """One optimizer step; the loss is averaged over the step's archs (one, or a sandwich). With `distill`, the
    first arch (the sandwich's largest) learns from the labels and its detached predictions are the others' targets."""
    target = None
    if mix is not None:
        x, target = mix(x, y)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for i, arch in enumerate(archs):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            logits = model(x, arch)
        if target is not None:
            loss = torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if cfg.distill and i == 0:
            target = F.softmax(logits.detach().float(), dim=-1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} on {arch.id}; lower --lr or enable --clip-grad")
        (loss / len(archs)).backward()
        total += loss.item() / len(archs)
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
    opt.step()
    return total
