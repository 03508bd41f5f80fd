"""PreNAS's zero-cost selector for a family without the ViT's isomer tables (MBConv): SNIP at initialisation, the
score of PreNAS's step 2, searched per params bucket.

What carries over from the ViT selector (`training.select`) and what does not:
- Step 2 carries over: an arch's score is plain SNIP, Σ|θ ⊙ ∂L/∂θ| over its weights after one backward pass of one
  batch (data-free by default: Gaussian images and the sum of the logits as the loss, as PreNAS's code does), and
  each bucket keeps its highest-scoring arch.
- Step 1 does not. Its argument is about isomers: ViT archs of equal size that differ only in where the same
  widths sit, among which a per-layer-normalised SNIP picks one. MBConv archs of equal params differ in what their
  blocks compute (op, kernel, expansion, squeeze-excite, depth), so they are not permutations of one another and no
  normalisation makes their scores comparable layer by layer.
- Nor does the single gradient pass. PreNAS scores every ViT arch from slices of one pass at the largest arch, where
  every choice is a width. MBConv's ops share no weights, so one path's gradient reaches one op per slot: each arch
  is scored on its own freshly initialised model (the same seed for every arch, so its score is a function of the
  arch), about 0.1-0.5 s each here.
- The space cannot be enumerated (about 10^9 archs in mbconv-small), so each bucket is searched by evolution on the
  score (`training.preferred.evolution_per_bucket`), as BossNAS on MBConv searches its rating.
Unnormalised SNIP grows with the weights summed over, so within a bucket it prefers the larger archs, as the
ViT selector's step 2 does (issue 24's confound); `bench.bench_rating` measures how well the score ranks archs
trained from scratch.

Writes `preferred.json` (what `python -m training train --preferred` reads), `scores.json` (every scored arch, its
costs and score) and `log.jsonl` into its folder.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from training.checks import json_text, write_json
from training.config import ZeroCostConfig
from training.preferred import (
    evolution_per_bucket,
    pick_preferred,
    preferred_doc,
    preferred_table,
    write_preferred,
)
from training.proxies import snip
from training.select import input_batch
from zoo.family import Space, get_family
from zoo.io import atomic_write_figure


def snip_at_init(space: Space, arch, batch: tuple[Tensor, Tensor | None], seed: int) -> float:
    """Σ|θ ⊙ ∂L/∂θ| of `arch`'s standalone model initialised from `seed`, after one pass over `batch` in train mode:
    L is the sum of the logits without labels, else the summed cross-entropy."""
    torch.manual_seed(seed)
    model = get_family(space.family).pretrained(space=space.to_dict(), arch=arch.to_dict()).train()
    x, y = batch
    logits = model(x)
    (logits.sum() if y is None else F.cross_entropy(logits, y, reduction="sum")).backward()
    with torch.no_grad():
        return float(sum(snip(p, p.grad).sum() for p in model.parameters() if p.grad is not None))


def scorer(cfg: ZeroCostConfig):
    """The selector's score of an arch, on its one batch."""
    batch = input_batch(cfg.space, cfg.data, cfg.batch_size, cfg.seed)
    return lambda arch: snip_at_init(cfg.space, arch, batch, cfg.seed)


def select(cfg: ZeroCostConfig, out: str | Path) -> tuple[dict, dict]:
    """Search every params bucket on the score; write preferred.json, scores.json and log.jsonl into `out`; return
    the preferred and scores documents."""
    out = Path(out)
    t0 = time.perf_counter()
    score = scorer(cfg)  # first: a data source it cannot read leaves no folder behind
    out.mkdir(parents=True, exist_ok=True)
    with (out / "log.jsonl").open("w") as f:
        log = lambda record: print(json_text(record, str(out / "log.jsonl"), indent=None), file=f, flush=True)
        candidates, bucket_seconds = evolution_per_bucket(cfg.space, score, cfg.buckets, cfg.population,
                                                          cfg.evaluations, cfg.seed, cfg.progress, log)
    scores = {"kind": "prezoo.zero-cost-scores", "space": cfg.space.name, "archs": [
        {"id": c.arch.id, "params": c.params, "flops": c.flops, "score": c.score, "arch": c.arch.to_dict()}
        for c in candidates]}
    write_json(out / "scores.json", scores)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("space", "buckets", "progress")}
    selector = {"method": "zero-cost", "proxy": "snip", **settings, "bucket_by": "params",
                "buckets": asdict(cfg.buckets), "search": "evolution per bucket, fitness the score"}
    stats = {"archs": len(candidates), "seconds": {"total": time.perf_counter() - t0},
             "bucket_seconds": bucket_seconds}
    doc = preferred_doc(cfg.space, selector, stats, cfg.buckets,
                        pick_preferred(candidates, cfg.buckets, "params", cfg.top_n), family=cfg.space.family)
    write_preferred(doc, out)
    return doc, scores


def plot_scores(doc: dict, scores: dict, path: Path) -> Path:
    """Every scored arch's score against its params, the preferred ones circled, the bucket edges dotted: where in
    its bucket the score puts each pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ax.scatter([a["params"] for a in scores["archs"]], [a["score"] for a in scores["archs"]], s=6, alpha=0.45,
               label="scored by the search")
    picks = [e for b in doc["buckets"] for e in b["entries"]]
    ax.scatter([e["params"] for e in picks], [e["score"] for e in picks], s=70, facecolors="none", edgecolors="red",
               linewidths=1.8, label="preferred")
    for b in doc["buckets"]:
        ax.axvline(b["low"], color="grey", lw=0.5, ls=":")
    ax.axvline(doc["buckets"][-1]["high"], color="grey", lw=0.5, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="params", ylabel="SNIP at initialisation",
           title=f"{doc['space']['name']}: {len(scores['archs'])} archs scored, one pick per bucket")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig)
    plt.close(fig)
    return path


def run(cfg: ZeroCostConfig, out: str | Path, plot: bool = True) -> Path:
    """The command's work: select, print the table, and the plot."""
    doc, scores = select(cfg, out)
    print(preferred_table(doc))
    if plot:
        print(f"wrote {plot_scores(doc, scores, Path(out) / 'preferred.png')}")
    print(f"wrote {', '.join(str(p) for p in sorted(Path(out).iterdir()))}")
    return Path(out) / "preferred.json"
