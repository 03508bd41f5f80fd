"""Export one zoo entry as a Hugging Face model folder: config.json, model.safetensors, README.md.

The folder loads three ways (each tested): `zoo.PreZooViT.from_pretrained(dir_or_repo)`;
timm (`create_model("local-dir:DIR" | "hf-hub:org/name", pretrained=True)`, or `"prezoo_vit"` with
`pretrained_cfg_overlay=dict(file=...)` and the config's model_args); plain
`safetensors.torch.load_file` + config.json.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from zoo.budget import human
from zoo.pretrained import HUB_TAGS, write_pretrained
from zoo.store import FLOPS_RULE, Zoo, ZooEntry

DATASET_IDS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100"}


def model_card(zoo: Zoo, entry: ZooEntry) -> str:
    """README.md with Hub metadata and the numbers a user needs to trust the model."""
    dataset = zoo.doc.get("dataset", "")
    data = ModelCardData(library_name="timm", license="apache-2.0", pipeline_tag="image-classification",
                         tags=HUB_TAGS, datasets=[DATASET_IDS[dataset]] if dataset in DATASET_IDS else None,
                         metrics=["accuracy"])
    a = entry.arch
    layers = "\n".join(f"| {i} | {h} | {h * zoo.space.head_dim} | {r:g} | {a.mlp_dim(i)} |"
                       for i, (h, r) in enumerate(zip(a.num_heads, a.mlp_ratios, strict=True)))
    lat = zoo.doc.get("latency_protocol", {})
    latency = (f"{entry.latency['median_ms']:.3f} ms median (p10 {entry.latency['p10_ms']:.3f}, "
               f"p90 {entry.latency['p90_ms']:.3f}); {lat.get('engine', '')} on {lat.get('device', '')}, "
               f"{lat.get('threads', '?')} threads, batch {lat.get('batch', '?')}"
               if entry.latency else "not measured (run `python -m zoo profile`)")
    acc = (f"top-1 {entry.top1:.2f}%, top-5 {entry.top5:.2f}%" if entry.top1 is not None else "not measured")
    pre = zoo.preprocessing
    body = f"""
# PreZoo ViT `{entry.id}` ({human(entry.params)} params)

A vision transformer sliced out of the PreZoo zoo **{zoo.name}** (search space `{zoo.space.name}`,
PreNAS preferred architecture; weights inherited from the one-shot supernet, no retraining).

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

FLOPs rule: {FLOPS_RULE}.

## Architecture
Embed {a.embed_dim}, depth {a.depth}, head dim {zoo.space.head_dim}, patch {zoo.space.patch_size},
relative position {'on' if zoo.space.rel_pos else 'off'}, {zoo.space.pool} pooling.

| layer | heads | qkv width | MLP ratio | MLP width |
|---|---|---|---|---|
{layers}

## Use
```python
import zoo                                        # pip install -r requirements.txt of PreZoo
model = zoo.PreZooViT.from_pretrained("DIR_OR_REPO")
import timm
model = timm.create_model("hf-hub:ORG/NAME", pretrained=True)   # or "local-dir:DIR" (after `import zoo`)
```
Plain safetensors: `safetensors.torch.load_file("model.safetensors")` with `config.json` (`model_args`)
and the parameter names of timm's `VisionTransformer`.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def write_hf_folder(zoo: Zoo, entry: ZooEntry, out: str | Path) -> Path:
    """The three files, each written atomically (the caller makes the folder itself appear atomically)."""
    return write_pretrained(out, zoo.subnet(entry), zoo.classes, zoo.preprocessing, model_card(zoo, entry))
