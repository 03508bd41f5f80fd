"""Hugging Face model cards: one entry's (README.md of its export folder and of its model repo) and a whole zoo's.

The export folder (config.json, model.safetensors, README.md) loads three ways (each tested):
the family's class (`zoo.PreZooViT.from_pretrained(dir_or_repo)`, `PreZooHyTra` for HyTra); timm
(`create_model("local-dir:DIR" | "hf-hub:org/name", pretrained=True)`, or its `timm_name` ("prezoo_vit",
"prezoo_hytra") with `pretrained_cfg_overlay=dict(file=...)` and the config's model_args);
plain `safetensors.torch.load_file` + config.json.

A card's python blocks run as they are (tests/test_cards.py runs them against a local Hub): a pushed card is
rendered for its repo id, the export folder's own card loads the folder it sits in. library_name is "prezoo"
(`zoo.usage.LIBRARY`), not "timm": timm's Hub snippet (`timm.create_model("hf-hub:...")` alone) fails with "Unknown
model" because PreZoo's package registers the architecture (tests/test_cards.py checks that it does fail); so every
snippet installs PreZoo and imports `zoo` first. A model repo pushed from a zoo that is on the Hub names that zoo repo
as its `base_model` (the supernet it was sliced from).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo.budget import human
from zoo.io import atomic_write_figure
from zoo.pretrained import write_pretrained
from zoo.pull import HubError
from zoo.store import INDEX, Zoo, ZooEntry
from zoo.usage import INSTALL, LIBRARY, LICENSE, PREPROCESS, STAND_IN, card_tags, model_usage

DATASETS = {"fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST"), "cifar10": ("cifar10", "CIFAR-10"),
            "cifar100": ("cifar100", "CIFAR-100")}  # zoo.json's dataset -> (Hub dataset id, pretty name)
CARD, PLOT = "README.md", "pareto.png"
SPLIT = "test"  # what zoo.json's top1/top5 were measured on (its eval_protocol)


def model_card(zoo: Zoo, entry: ZooEntry, repo_id: str | None = None, base_model: str | None = None) -> str:
    """README.md with Hub metadata, the numbers a user needs to trust the model and code that runs as it is:
    for `repo_id`, loading that model repo, whose `base_model` is the zoo's repo (`base_model`, else the repo the
    zoo was pulled from, if it was); without, loading the folder the card is in. What the model is comes from the
    zoo's family."""
    family, dataset = zoo.family, zoo.doc.get("dataset", "")
    base_model = (base_model or hub_repo_of(zoo)) if repo_id else None
    data = ModelCardData(library_name=LIBRARY, license=LICENSE, pipeline_tag="image-classification",
                         tags=card_tags(family.pretrained.hub_tags),
                         datasets=[DATASETS[dataset][0]] if dataset in DATASETS else None, metrics=["accuracy"],
                         model_name=repo_id or f"prezoo-{entry.id}", base_model=base_model,
                         eval_results=eval_results(zoo, entry) or None)
    latency = (f"{entry.latency['median_ms']:.3f} ms median (p10 {entry.latency['p10_ms']:.3f}, "
               f"p90 {entry.latency['p90_ms']:.3f}); {zoo.latency_protocol_text()}"
               if entry.latency else "not measured (run `prezoo profile`)")
    acc = (f"top-1 {top1_text(zoo, entry)}, top-5 {entry.top5:.2f}%" if entry.top1 is not None else "not measured")
    pre = zoo.preprocessing
    article = "An" if family.noun[0] in "aeiou" else "A"
    body = f"""
# PreZoo {family.title} `{entry.id}` ({human(entry.params)} params)

{article} {family.noun} sliced out of the PreZoo zoo **{zoo.name}** (search space `{zoo.space.name}`,
{family.origin}; {zoo.weights_text(entry)}).{sliced_from(base_model)}
It loads with timm once PreZoo's package is imported (`import zoo` registers `{family.pretrained.timm_name}`; timm
alone does not know it), or with ONNX Runtime alone. License: Apache-2.0, PreZoo's.

| | |
|---|---|
| parameters | {entry.params:,} |
| FLOPs (MACs) | {entry.flops:,} |
| accuracy | {acc} — {zoo.doc.get('eval_protocol', '')} |
| latency | {latency} |
| input | {pre.get('in_chans')}×{pre.get('img_size')}² , mean {pre.get('mean')}, std {pre.get('std')}, \
{pre.get('interpolation')} |
| classes | {len(zoo.classes)}: {', '.join(zoo.classes[:12])}{' …' if len(zoo.classes) > 12 else ''} |
| zoo checksum | `{zoo.checksum[:16]}` |

FLOPs rule: {flops_rule(zoo)}. {interval_note(zoo)}

## Architecture
{family.describe_arch(zoo.space, entry.arch)}

{markdown_table(family.layer_headers, family.layer_rows(zoo.space, entry.arch))}

{model_usage(repo_id, family.pretrained)}"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def flops_rule(zoo: Zoo) -> str:
    """What the zoo's FLOPs count: its own index's words, else (an index written before it recorded them) those of
    its family."""
    return zoo.doc.get("flops_rule") or zoo.family.flops_rule


def markdown_table(headers: tuple[str, ...], rows: list[list]) -> str:
    """A Markdown table; numbers with a fraction as Python's `g` format writes them (2.0 -> 2)."""
    def cell(value: object) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    lines = [headers, ["---"] * len(headers), *([cell(v) for v in row] for row in rows)]
    return "\n".join(f"| {' | '.join(map(str, line))} |" for line in lines)


def eval_results(zoo: Zoo, entry: ZooEntry) -> list[EvalResult]:
    """Top-1 and top-5 (percent, on the dataset's test split) as Hub `model-index`, when the zoo says what they were
    measured on. The metric names stay plain: the Hub labels leaderboards with them. The 95% interval has no field
    in `model-index`: the card's text gives it (`top1_text`, `interval_note`)."""
    dataset = zoo.doc.get("dataset")
    if not dataset:
        return []
    dataset_id, dataset_name = DATASETS.get(dataset, (dataset, dataset))
    measured = [(name, value) for name, value in (("top-1 accuracy", entry.top1), ("top-5 accuracy", entry.top5))
                if value is not None]
    return [EvalResult(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_name,
                       dataset_split=SPLIT, metric_type="accuracy", metric_value=value, metric_name=name)
            for name, value in measured]


def hub_repo_of(zoo: Zoo) -> str | None:
    """The Hub repo a zoo was pulled from: its folder is that repo's snapshot in the Hub cache
    (`…/models--org--name/snapshots/<commit>`; Hub ids never hold "--"); None for any other folder."""
    snapshots, repo = zoo.root.parent, zoo.root.parent.parent
    if snapshots.name != "snapshots" or not repo.name.startswith("models--"):
        return None
    return repo.name.removeprefix("models--").replace("--", "/")


def zoo_repo_holding(zoo: Zoo, repo_id: str) -> str:
    """`repo_id`, once its index (pulled alone) names the same weights as `zoo`: a card names as its base model only
    the zoo repo it was sliced from (HubError otherwise)."""
    from zoo.pull import pull

    index = pull(repo_id, allow_patterns=[INDEX]) / INDEX
    try:
        weights = json.loads(index.read_text())["weights"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise HubError(f"'{repo_id}' holds no PreZoo zoo (no readable {INDEX}); push the zoo there first with "
                       f"--whole-zoo") from None
    if weights != zoo.checksum:
        raise HubError(f"'{repo_id}' holds another zoo (weights {str(weights)[:16]}…, not {zoo.name}'s "
                       f"{zoo.checksum[:16]}…)")
    return repo_id


def sliced_from(base_model: str | None) -> str:
    return "" if base_model is None else f"\nThe zoo is the Hub repo `{base_model}`, this card's `base_model`."


def top1_text(zoo: Zoo, entry: ZooEntry) -> str:
    """'89.85% (95% interval 89.25–90.42)', or '–' when not measured."""
    if entry.top1 is None:
        return "–"
    interval = zoo.top1_interval(entry)
    return f"{entry.top1:.2f}%" + ("" if interval is None else f" (95% interval {interval[0]:.2f}–{interval[1]:.2f})")


def interval_note(zoo: Zoo) -> str:
    """Which accuracy chose the entries (budgets, the Pareto front) and which is reported, with its intervals."""
    chosen = f"Accuracy: {zoo.choice_text()}."
    return (chosen if zoo.eval_images is None else
            f"{chosen} Accuracy intervals: 95% Wilson score intervals for {zoo.eval_images:,} test images "
            f"(`zoo.stats`); entries whose intervals overlap are not shown apart by this test set.")


def zoo_card(zoo: Zoo, repo_id: str) -> str:
    """README.md of a whole-zoo repo: every entry with its numbers, the Pareto plot (`PLOT`), and code that loads
    the zoo and classifies with the most accurate entry within a budget."""
    dataset = zoo.doc.get("dataset", "")
    data = ModelCardData(library_name=LIBRARY, license=LICENSE, pipeline_tag="image-classification",
                         tags=card_tags(zoo.family.pretrained.hub_tags, "supernet"),
                         datasets=[DATASETS[dataset][0]] if dataset in DATASETS else None, metrics=["accuracy"])
    front = zoo.pareto("params")  # by params, ascending
    rows = "\n".join(f"| `{e.id}` | {e.params:,} | {human(e.flops)} | {top1_text(zoo, e)} | "
                     f"{'–' if e.latency_ms is None else f'{e.latency_ms:.3f} ms'} | {'yes' if e in front else ''} |"
                     for e in sorted(zoo.entries, key=lambda e: e.params))
    shown = front or sorted(zoo.entries, key=lambda e: e.params)
    budget = f"{math.ceil(shown[len(shown) // 2].params / 1e3)}K"  # rounded up: that entry fits
    body = f"""
# PreZoo zoo `{zoo.name}`: {len(zoo.entries)} {zoo.family.noun}s from one supernet

A one-shot supernet (search space `{zoo.space.name}`, {zoo.space.in_chans}×{zoo.space.img_size}² input,
{len(zoo.classes)} classes) and the index of its {zoo.family.origin}s, each measured: load the zoo, ask
for a budget, get a standalone model. Accuracy: {zoo.doc.get('eval_protocol', 'not recorded')}. \
{interval_note(zoo)}
Latency: {zoo.latency_protocol_text() or 'not measured'}. FLOPs rule: {flops_rule(zoo)}.

![top-1 against parameters, Pareto front joined]({PLOT})

| id | params | FLOPs (MACs) | top-1 | latency | Pareto (params) |
|---|---|---|---|---|---|
{rows}

## Use
```python
{INSTALL}
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

import zoo

z = zoo.Zoo.load("{repo_id}")  # zoo.json + the supernet, downloaded once into the Hub cache
entry = z.query(max_params="{budget}")  # the most accurate entry within the budget (also max_flops, max_latency_ms)
model = z.subnet(entry)  # a standalone torch model with exactly entry.params weights
pre = z.preprocessing

{STAND_IN}
{PREPROCESS}
with torch.no_grad():
    probabilities = model(torch.from_numpy(x)).softmax(-1)[0]
print(f"{{entry.id}} ({{entry.params:,}} params): {{z.classes[int(probabilities.argmax())]}}: "
      f"{{float(probabilities.max()):.3f}}")
```
`python -m zoo list --zoo {repo_id}` prints the same table; `python -m server --zoo {repo_id}` serves the zoo.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def scale_cost_axis(ax, costs: list[float]) -> None:
    """A log axis when the costs span more than 20x: a zoo from 10k to 1M parameters keeps its small entries apart."""
    if costs and min(costs) > 0 and max(costs) / min(costs) > 20:
        ax.set_xscale("log")


def pareto_plot(zoo: Zoo, path: str | Path) -> Path:
    """Top-1 (with its 95% interval) against parameters for every measured entry, the Pareto front joined."""
    from matplotlib.figure import Figure

    scored = sorted((e for e in zoo.entries if e.top1 is not None), key=lambda e: e.params)
    fig = Figure(figsize=(6.4, 4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    intervals = [zoo.top1_interval(e) for e in scored]
    errors = None if None in intervals else [[e.top1 - lo for e, (lo, _) in zip(scored, intervals, strict=True)],
                                              [hi - e.top1 for e, (_, hi) in zip(scored, intervals, strict=True)]]
    ax.errorbar([e.params / 1e6 for e in scored], [e.top1 for e in scored], yerr=errors, fmt="o", color="#9ca3af",
                capsize=3, label="entries" + ("" if errors is None else " (95% interval)"), zorder=2)
    front = zoo.pareto("params")
    ax.plot([e.params / 1e6 for e in front], [e.top1 for e in front], "-o", color="#2563eb", label="Pareto front",
            zorder=3)
    scale_cost_axis(ax, [e.params for e in scored])
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(f"test top-1 (%); front chosen on {zoo.choice_split[0]}")
    ax.set_title(f"zoo {zoo.name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return atomic_write_figure(path, fig)


def write_hf_folder(zoo: Zoo, entry: ZooEntry, out: str | Path) -> Path:
    """The three files, each written atomically (the caller makes the folder itself appear atomically)."""
    return write_pretrained(out, zoo.subnet(entry), zoo.classes, zoo.preprocessing, model_card(zoo, entry))
