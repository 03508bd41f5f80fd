"""Fine-tune an exported subnet of any model family on a user's images, timm-style.

The backbone keeps its weights; the head is rebuilt for the data's classes and the input conv adapted to its channels
where the family allows (`<Family.pretrained>.from_pretrained(..., num_classes=, in_chans=)`, timm's semantics: the
folder's config.json names its family by its timm architecture). Optionally the zoo's
largest entry teaches it (knowledge distillation on the logits; only for the same classes). The result is an HF
folder (config.json, model.safetensors, README.md card) that `timm.create_model("local-dir:OUT", pretrained=True)`
loads, plus `finetune.json` (settings and per-epoch numbers) and `val_curve.png`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelCardData
from tqdm import tqdm

from training.checks import json_text
from training.config import FinetuneConfig
from training.data import DataInfo, load_data, make_loader
from training.evaluate import tensor_batches
from training.train import lr_at, param_groups
from zoo.budget import human
from zoo.family import Family, Space, family_of_config, get_family
from zoo.io import atomic_write_figure, atomic_write_text
from zoo.pretrained import write_pretrained
from zoo.pull import pull
from zoo.store import Zoo
from zoo.usage import LIBRARY, LICENSE, card_tags, model_usage

HUB_PREFIX = "hf-hub:"
LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L weights: what a gray model's server does to a colour image
EVAL_BATCH = 256


@dataclass
class Teacher:
    """The zoo's largest entry, seeing each batch through its own preprocessing, its logits in the data's order."""

    name: str
    model: torch.nn.Module
    view: Callable[[torch.Tensor], torch.Tensor]
    order: list[int]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.view(x))[:, self.order]


@dataclass
class FinetuneResult:
    model: torch.nn.Module  # its family's Hub class
    out: Path
    history: list[dict]


# -- the student, the data and the teacher ----------------------------------------------------------


def model_folder(source: str) -> Path:
    """A local exported folder, or the snapshot of `hf-hub:ORG/NAME` (pulled through the standard Hub cache)."""
    if source.startswith(HUB_PREFIX):
        return pull(source[len(HUB_PREFIX):])
    path = Path(source)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not an exported model folder (no config.json); give a folder written "
                                f"by `prezoo get --format hf` or hf-hub:ORG/NAME")
    return path


def saved_model(folder: Path) -> tuple[Family, Space]:
    """The family and the space (input size, channels, classes) of the weights in an exported folder."""
    try:
        config = json.loads((folder / "config.json").read_text())
        family = family_of_config(config)
        return family, family.space_from_dict(config["space"])
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # ValueError: not JSON, or no family's
        raise ValueError(f"{folder / 'config.json'} is not the config of a PreZoo model: {e!r}") from None


def preprocessing_of(info: DataInfo) -> dict:
    """What a server needs to feed the fine-tuned model as it was trained."""
    return {"img_size": info.img_size, "in_chans": info.in_chans, "crop_pct": info.crop_pct,
            "interpolation": info.interpolation, "mean": list(info.mean), "std": list(info.std)}


def teacher_view(student: DataInfo, teacher: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """Re-preprocess a student batch for the teacher: undo the student's normalisation, convert the channels
    (RGB to gray by PIL's luma weights, gray to RGB by repeating), resize, normalise with the teacher's numbers."""
    shape = (1, -1, 1, 1)
    s_mean, s_std = torch.tensor(student.mean).view(shape), torch.tensor(student.std).view(shape)
    t_mean, t_std = torch.tensor(teacher["mean"]).view(shape), torch.tensor(teacher["std"]).view(shape)
    channels = (student.in_chans, teacher["in_chans"])
    if channels not in ((1, 1), (3, 3), (1, 3), (3, 1)):
        raise ValueError(f"cannot show {student.in_chans}-channel images to a {teacher['in_chans']}-channel teacher")
    size = teacher["img_size"]

    def view(x: torch.Tensor) -> torch.Tensor:
        raw = x * s_std.to(x.device) + s_mean.to(x.device)
        if channels == (3, 1):
            raw = (raw * torch.tensor(LUMA, device=x.device).view(shape)).sum(dim=1, keepdim=True)
        elif channels == (1, 3):
            raw = raw.expand(-1, 3, -1, -1)
        if raw.shape[-1] != size:
            raw = F.interpolate(raw, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
        return (raw - t_mean.to(x.device)) / t_std.to(x.device)

    return view


def load_teacher(source: str, info: DataInfo, device: torch.device) -> Teacher:
    """The largest entry of a zoo with the data's classes (in any order); refuse any other zoo."""
    zoo = Zoo.load(source)
    lacking, extra = sorted(set(info.labels) - set(zoo.classes)), sorted(set(zoo.classes) - set(info.labels))
    if lacking or extra:
        raise ValueError(f"cannot distill from zoo {zoo.name}: distillation on logits needs the data's classes, but "
                         f"the zoo lacks {lacking[:8]} and has {extra[:8]} that the data lacks; fine-tune without "
                         f"--distill")
    entry = max(zoo.entries, key=lambda e: e.params)
    order = [zoo.classes.index(c) for c in info.labels]
    return Teacher(f"{zoo.name}/{entry.id}", zoo.subnet(entry).to(device).eval(),
                   teacher_view(info, zoo.preprocessing), order)


# -- training ----------------------------------------------------------------------------------------


def loss_fn(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None,
            cfg: FinetuneConfig) -> torch.Tensor:
    """Cross-entropy with label smoothing, mixed with soft distillation (KL at temperature T, scaled by T²)."""
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if teacher_logits is None:
        return ce
    T = cfg.distill_temperature
    kd = F.kl_div(F.log_softmax(logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1), log_target=True,
                  reduction="batchmean") * T * T
    return (1 - cfg.distill_alpha) * ce + cfg.distill_alpha * kd


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches, device: torch.device) -> tuple[float, float]:
    """Top-1 (%) and mean cross-entropy on pre-loaded batches."""
    model.eval()
    correct = loss = n = 0
    for x, y in batches:
        logits = model(x.to(device)).float()
        y = y.to(device)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        n += len(y)
    return 100 * correct / n, loss / n


def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune, validate after every epoch, and write the result folder."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folder = model_folder(cfg.model)
    family, space = saved_model(folder)
    common = dict(img_size=space.img_size, val_size=cfg.val_size, seed=cfg.seed)
    train_set, info = load_data(cfg.data, "train", augment=cfg.augment, **common)
    val_batches = tensor_batches(load_data(cfg.data, "val", **common)[0], EVAL_BATCH)
    teacher = load_teacher(cfg.distill, info, device) if cfg.distill else None
    torch.manual_seed(cfg.seed)  # the fresh head
    model = family.pretrained.from_pretrained(folder, num_classes=info.num_classes, in_chans=info.in_chans).to(device)
    model.labels, model.preprocessing = list(info.labels), preprocessing_of(info)

    history = train_epochs(model, train_set, val_batches, cfg, teacher, device)
    model.eval()
    out = write_result(Path(cfg.out), model.cpu(), cfg, info, history, teacher)
    return FinetuneResult(model, out, history)


def train_epochs(model: torch.nn.Module, train_set, val_batches, cfg, teacher: Teacher | None,
                 device: torch.device, desc: str = "finetune") -> list[dict]:
    """Train `model` for `cfg.epochs` (AdamW, linear warm-up then cosine, label smoothing, optional distillation),
    validating after every epoch; the per-epoch history. `cfg`: a FinetuneConfig or anything with its training
    fields (training.tune's TuneConfig)."""
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    history, step = [], 0
    bar = tqdm(total=total, desc=desc, unit="step", disable=not cfg.progress)
    for epoch in range(cfg.epochs):
        model.train()
        seen, loss_sum = 0, 0.0
        for x, y in make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch):
            x, y = x.to(device), y.to(device)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, total, warmup)
            loss = loss_fn(model(x).float(), y, teacher.logits(x) if teacher else None, cfg)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        top1, val_loss = evaluate(model, val_batches, device)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "val_top1": top1, "val_loss": val_loss})
        bar.write(f"{desc} epoch {epoch + 1}/{cfg.epochs}: train loss {loss_sum / seen:.4f}  val top-1 {top1:.2f}%  "
                  f"val loss {val_loss:.4f}")
    bar.close()
    return history


# -- the result --------------------------------------------------------------------------------------


def write_result(out: Path, model: torch.nn.Module, cfg: FinetuneConfig, info: DataInfo, history: list[dict],
                 teacher: Teacher | None) -> Path:
    doc = {"schema_version": 1, "kind": "prezoo.finetune", "config": asdict(cfg), "data": info.name,
           "classes": list(info.labels), "teacher": teacher.name if teacher else None, "history": history}
    text = json_text(doc, str(out / "finetune.json"))  # first: a number it refuses leaves no folder behind
    plot_curve(history, out / "val_curve.png")
    atomic_write_text(out / "finetune.json", text + "\n")
    card = model_card(model, cfg, info, history, teacher)
    return write_pretrained(out, model, model.labels, model.preprocessing, card)


def plot_curve(history: list[dict], path: Path) -> Path:
    """Validation top-1 per epoch, with the training and validation losses on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(epochs, [h["val_top1"] for h in history], "o-", color="tab:blue", label="val top-1")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)", color="tab:blue")
    ax.set_ylim(0, 101)
    losses = ax.twinx()
    losses.plot(epochs, [h["train_loss"] for h in history], "--", color="tab:red", label="train loss")
    losses.plot(epochs, [h["val_loss"] for h in history], ":", color="tab:orange", label="val loss")
    losses.set_ylabel("loss")
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    path = atomic_write_figure(path, fig)
    plt.close(fig)
    return path


def model_card(model: torch.nn.Module, cfg: FinetuneConfig, info: DataInfo, history: list[dict],
               teacher: Teacher | None) -> str:
    """README.md: where the model comes from, how it was fine-tuned, and its validation curve."""
    family = get_family(model.family)
    base = cfg.model[len(HUB_PREFIX):] if cfg.model.startswith(HUB_PREFIX) else None
    data = ModelCardData(library_name=LIBRARY, license=LICENSE, pipeline_tag="image-classification",
                         tags=card_tags(family.pretrained.hub_tags), base_model=base, metrics=["accuracy"])
    a, last = model.arch, history[-1]
    rows = "\n".join(f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_top1']:.2f} | {h['val_loss']:.4f} |"
                     for h in history)
    n = family.params(model.space, a)
    distill = (f"distilled from `{teacher.name}` (weight {cfg.distill_alpha:g}, temperature "
               f"{cfg.distill_temperature:g})" if teacher else "no distillation")
    body = f"""
# PreZoo {family.title} `{a.id}`, fine-tuned on {info.name} ({human(n)} params)

Fine-tuned from `{cfg.model}` on `{info.name}`: backbone kept, new head for {info.num_classes} classes
({', '.join(info.labels[:12])}{' …' if len(info.labels) > 12 else ''}), {distill}.
{cfg.epochs} epochs, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} (warmup {cfg.warmup_epochs:g} epochs, cosine to
{cfg.min_lr:g}), weight decay {cfg.weight_decay:g}, label smoothing {cfg.label_smoothing:g},
augmentation {'on' if cfg.augment else 'off'}, seed {cfg.seed}.

| | |
|---|---|
| parameters | {n:,} |
| validation top-1 (last epoch) | {last['val_top1']:.2f}% (held out of the training folder) |
| input | {info.in_chans}×{info.img_size}², mean {list(info.mean)}, std {list(info.std)}, {info.interpolation}, \
crop {info.crop_pct:g} |
| architecture | {family.describe_arch(model.space, a)} Layers: `{a.describe()}` |

![validation curve](val_curve.png)

| epoch | train loss | val top-1 (%) | val loss |
|---|---|---|---|
{rows}

{model_usage(None, family.pretrained)}"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content
