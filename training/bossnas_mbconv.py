"""BossNAS (ICCV 2021) for MBConv spaces: training.bossnas's label-free selector with the supernet's stages as its
blocks (spec docs/bossnas-spec.md sections 3, 4, 7).

Carried over from the HyTra version, by import: the two view pipelines, the ensemble bootstrapping step (targets
"ensemble", "own" and "supervised"; one online net with projector and predictor per block, its EMA copy), the frozen
prefix run without gradients (the stem trains with stage 0), SGD with zero gradients dropped, per-path BatchNorm
recalibration of the rated path and its heads, the symmetric rating against the centre of the target's
projections, NAS-train and NAS-val, and every setting of `BossConfig`.

What differs, and why:
- A block is a stage; a stage path is the stage's width and its blocks (op, kernel, expansion, squeeze-excite).
- Widths differ between paths, as HyTra's end scales do: the projector has one adapter per (stage, width), Linear
  (width -> 256, no bias) + BN1d, before the stage's shared MLP, so every path of a stage projects into one space
  where the ensemble target and the centre are comparable.
- Inputs: stage k is fed from the best earlier path into EACH width of stage k-1 (as HyTra feeds every input
  scale), one drawn uniformly per step: every arch of the space then meets its own input width, so any arch can
  be rated.
- Rating is lazy: a stage has up to thousands of paths per input width (mbconv-small's last stage 10,845), too
  many to rate each. After a stage trains, its centre is the target's mean projection over a fixed random sample of
  `centre_paths` (input width, path) pairs, drawn as training draws them (input width uniform, then `random_stage`:
  the population the supernet was trained on), or every pair where there are no more. A second, independent sample
  gives a second centre, and each path of the first is rated against both (scores.json's `centre_check`: how far
  the ranking depends on the sample). The first sample's losses choose the next stage's prefixes (least summed loss
  into each width). Any other path is rated on demand and remembered: score(arch) = Σ_k L_k(arch's stage k | the
  best prefix into its input width), λ = 1 (`Rater.score`). A stage's online weights and heads never change after
  it trains (later stages run it without gradients), so a rating made after the search equals one made during it.
- Budgets: each params bucket is searched by `training.search.evolution`, fitness −score: a mutant keeps most of
  its parent's stage paths, which the memo has rated, so the search meets many archs per newly rated path, where a
  fixed random sample per bucket would rarely repeat a last-stage path.

Writes config.json, nets.safetensors (the online net and the centres: what rates any arch later, `load_rater`),
scores.json (per stage the prefixes, the centre check and every rated path's loss), preferred.json and log.jsonl.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from training.bossnas import (
    PROJ_OUT,
    BlockInputs,
    BlockRun,
    BossConfig,
    Prefix,
    RatingInputs,
    eb_train,
    feed,
    head,
    nas_data,
    outputs,
    rating_inputs,
    rating_loss,
    siamese_nets,
)
from training.checks import Range, check_all, json_text, write_json
from training.preferred import (
    Buckets,
    Candidate,
    evolution_per_bucket,
    pick_preferred,
    preferred_doc,
    write_preferred,
)
from zoo.families.mbconv import MBConvArch, MBConvSpace, MBConvSupernet
from zoo.families.mbconv.layers import placed_blocks
from zoo.families.mbconv.model import channels_last, run_block, sliced
from zoo.families.mbconv.sampling import random_stage
from zoo.families.mbconv.space import MBCONV_SMALL, Stage

SCORES_SCHEMA_VERSION = 1
MBCONV_RANGES = {"centre_paths": Range(int, 2, 4096), "evaluations": Range(int, 1, 100_000),
                 "population": Range(int, 1, 10_000)}
Stages = tuple[Stage, ...]


@dataclass
class MBConvBossConfig(BossConfig):
    """`BossConfig` on an MBConv space, with the lazy rating's centre sample and the per-bucket evolution."""

    space_type: ClassVar[type] = MBConvSpace
    space: MBConvSpace = MBCONV_SMALL
    centre_paths: int = 64  # (input width, stage path) pairs per centre sample
    evaluations: int = 200  # distinct archs each params bucket's evolution scores
    population: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check_all(self, MBCONV_RANGES)
        for k in range(self.space.num_stages):
            if self.paths > stage_path_count(self.space, k):
                raise ValueError(f"paths {self.paths} exceeds the {stage_path_count(self.space, k)} paths of stage {k} "
                                 f"of {self.space.name}: no step could draw that many distinct ones")


def config_doc(cfg: MBConvBossConfig) -> dict:
    return {"kind": "prezoo.bossnas-config", "family": "mbconv", **asdict(cfg), "space": cfg.space.to_dict()}


def load_config(doc: dict) -> MBConvBossConfig:
    """The config of a config.json (`config_doc`), checked as a new one is."""
    if doc.get("kind") != "prezoo.bossnas-config" or doc.get("family") != "mbconv":
        raise ValueError("not an MBConv BossNAS config.json")
    settings = {f.name: doc[f.name] for f in fields(MBConvBossConfig) if f.name not in ("space", "buckets")}
    return MBConvBossConfig(space=MBConvSpace.from_dict(doc["space"]), buckets=Buckets(**doc["buckets"]), **settings)


# -- stage paths -------------------------------------------------------------------------------------------------------
def stage_path_count(space: MBConvSpace, k: int) -> int:
    """Paths of stage `k` from one input width: its widths times every sequence of 1 .. depth blocks."""
    n = len(space.block_choices(k))
    return len(space.widths[k]) * sum(n**d for d in range(1, space.depths[k] + 1))


def stage_paths(space: MBConvSpace, k: int) -> list[Stage]:
    """Every path of stage `k` (only for stages of few paths)."""
    blocks = space.block_choices(k)
    return [Stage(w, chosen) for w in space.widths[k] for d in range(1, space.depths[k] + 1)
            for chosen in itertools.product(blocks, repeat=d)]


def in_widths(space: MBConvSpace, k: int) -> tuple[int, ...]:
    """The widths stage `k`'s input can have: the stem's, or each width of the stage before."""
    return space.widths[k - 1] if k else (space.stem_channels,)


def draw_stages(space: MBConvSpace, k: int, n: int, rng: random.Random) -> list[Stage]:
    """`n` distinct paths of stage `k`, each drawn as `random_stage` draws (width, depth, then blocks uniform)."""
    out: dict[Stage, None] = {}
    while len(out) < n:
        out.setdefault(random_stage(space, k, rng))
    return list(out)


def centre_sample(space: MBConvSpace, k: int, n: int, rng: random.Random) -> list[tuple[int, Stage]]:
    """`n` distinct (input width, path) pairs of stage `k`, the input width uniform, the path as `random_stage` draws
    it; every pair if the stage has no more than `n`."""
    widths = in_widths(space, k)
    if len(widths) * stage_path_count(space, k) <= n:
        return [(w, stage) for w in widths for stage in stage_paths(space, k)]
    out: dict[tuple[int, Stage], None] = {}
    while len(out) < n:
        out.setdefault((rng.choice(widths), random_stage(space, k, rng)))
    return list(out)


def stage_key(stage: Stage) -> dict:
    return MBConvArch((stage,)).to_dict()["stages"][0]


def stage_of(d: Any) -> Stage:
    return MBConvArch.from_dict({"stages": [d]}).stages[0]


# -- the nets and how a stage runs ------------------------------------------------------------------------------------
def build_nets(space: MBConvSpace, target: str) -> tuple[nn.ModuleDict, nn.ModuleDict | None]:
    """`training.bossnas.siamese_nets` around an MBConv supernet, with heads per (stage, width) ("w<width>")."""
    blocks = [{f"w{w}": w for w in space.widths[k]} for k in range(space.num_stages)]
    return siamese_nets(MBConvSupernet(space), blocks, space.num_classes, target)


def run_placed(supernet: MBConvSupernet, blocks: Sequence, x: Tensor) -> Tensor:
    """Placed blocks through the supernet's slices (batch statistics in training, as the supernet runs a path)."""
    for p in blocks:
        x = run_block(p, sliced(supernet.slot(p), p, supernet.training), x)
    return x


def stage_run(space: MBConvSpace, k: int, prefix: Stages) -> BlockRun:
    """Stage `k` after the stages `prefix` in the supernet's slices: the EB step's view of it."""
    before = placed_blocks(space, MBConvArch(prefix)) if prefix else []

    def run_prefix(net: nn.ModuleDict):
        return lambda x: run_placed(net["supernet"], before, channels_last(net["supernet"].stem(x)))

    def run_path(net: nn.ModuleDict, stage: Stage):
        blocks = placed_blocks(space, MBConvArch((*prefix, stage)))[len(before):]
        after = head(net, k, f"w{stage.width}")
        return lambda h: after(run_placed(net["supernet"], blocks, h))

    return BlockRun(k, run_prefix, run_path)


class Features(nn.Module):
    """An extracted path's stem and first `depth` stages: a stage's input as one module (what BN recalibration
    runs)."""

    def __init__(self, net: nn.Module, depth: int) -> None:
        super().__init__()
        self.stem, self.stages = net.stem, nn.ModuleList(net.feature_stages()[:depth])

    def forward(self, x: Tensor) -> Tensor:
        x = channels_last(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        return x


def completed(space: MBConvSpace, stages: Stages) -> MBConvArch:
    """`stages` followed by the narrowest one-block stage everywhere after: an arch to extract them from."""
    rest = tuple(Stage(space.widths[s][0], (space.block_choices(s)[0],)) for s in range(len(stages), space.num_stages))
    return MBConvArch(stages + rest)


def prefix_module(net: nn.ModuleDict, prefix: Stages) -> Features:
    """The stem and the stages `prefix`, extracted (copies of the supernet's slices)."""
    return Features(net["supernet"].extract(completed(net["supernet"].space, prefix)), len(prefix))


def stage_module(net: nn.ModuleDict, k: int, prefix: Stages, stage: Stage) -> nn.Sequential:
    """Path `stage` of stage `k` after `prefix`, extracted, then its head."""
    extracted = net["supernet"].extract(completed(net["supernet"].space, (*prefix, stage)))
    return nn.Sequential(extracted.stages[k], head(net, k, f"w{stage.width}"))


# -- rating (spec 4.1, lazily) ----------------------------------------------------------------------------------------
class Rater:
    """Σ_k L_k of any arch (lower is better). L_k(w, path) is path's loss after the best prefix into input width w,
    its BN statistics and its heads' recalibrated, against stage k's centre (or validation cross-entropy for the
    supervised baseline); each (stage, input width, path) is rated once (`memo`)."""

    def __init__(self, cfg: MBConvBossConfig, online: nn.ModuleDict, inputs: RatingInputs,
                 prefixes: list[dict[int, Prefix]], centres: list[tuple[Tensor, Tensor]] | None) -> None:
        self.cfg, self.online, self.inputs, self.prefixes, self.centres = cfg, online, inputs, prefixes, centres
        self.memo: dict[tuple[int, int, Stage], float] = {}
        self._fed: dict[tuple[int, int], BlockInputs] = {}

    def fed(self, k: int, width: int) -> BlockInputs:
        """Stage `k`'s inputs from width `width`, computed once."""
        if (k, width) not in self._fed:
            self._fed[k, width] = feed(prefix_module(self.online, self.prefixes[k][width].steps), self.inputs)
        return self._fed[k, width]

    def outputs(self, k: int, width: int, stage: Stage) -> list[Tensor]:
        return outputs(stage_module(self.online, k, self.prefixes[k][width].steps, stage), self.fed(k, width))

    def loss(self, k: int, outs: Sequence[Tensor], centres: tuple[Tensor, Tensor] | None = None) -> float:
        """Stage `k`'s rating of a path's outputs (against `centres` instead of its own, for the centre check)."""
        if self.cfg.ssl and centres is None:
            centres = self.centres[k]
        return rating_loss(outs, centres, self.inputs.val_y)

    def stage_loss(self, k: int, width: int, stage: Stage) -> float:
        key = (k, width, stage)
        if key not in self.memo:
            self.memo[key] = self.loss(k, self.outputs(k, width, stage))
        return self.memo[key]

    def score(self, arch: MBConvArch) -> float:
        space = self.cfg.space
        space.validate(arch)
        widths = (space.stem_channels, *(st.width for st in arch.stages[:-1]))
        return sum(self.stage_loss(k, w, st) for k, (w, st) in enumerate(zip(widths, arch.stages, strict=True)))


def centre_of(target: nn.ModuleDict, k: int, sample: Sequence[tuple[int, Stage]], fed: dict[int, BlockInputs],
              prefixes: dict[int, Prefix], progress: bool) -> tuple[Tensor, Tensor]:
    """(c̄₁, c̄₂): the target's raw projections of the two NAS-val views, averaged over `sample`."""
    images = len(next(iter(fed.values())).val[0])
    sums = [torch.zeros(images, PROJ_OUT) for _ in range(2)]
    for w, stage in tqdm(sample, desc=f"centre stage {k}", unit="path", disable=not progress):
        for total, z in zip(sums, outputs(stage_module(target, k, prefixes[w].steps, stage), fed[w]), strict=True):
            total += z
    return sums[0] / len(sample), sums[1] / len(sample)


def rate_stage(rater: Rater, target: nn.ModuleDict | None, k: int, rng: random.Random) -> dict:
    """Stage `k` right after its training: its centre from one sample, a second centre from another, each path of
    the first sample rated against both (the memo keeps the first). Returns the centre check."""
    cfg = rater.cfg
    sample = centre_sample(cfg.space, k, cfg.centre_paths, rng)
    other = None
    if cfg.ssl:
        fed = {w: feed(prefix_module(target, rater.prefixes[k][w].steps), rater.inputs) for w in rater.prefixes[k]}
        rater.centres.append(centre_of(target, k, sample, fed, rater.prefixes[k], cfg.progress))
        other = centre_of(target, k, centre_sample(cfg.space, k, cfg.centre_paths, rng), fed, rater.prefixes[k],
                          cfg.progress)
    check = []
    for w, stage in tqdm(sample, desc=f"rate stage {k}", unit="path", disable=not cfg.progress):
        outs = rater.outputs(k, w, stage)
        rater.memo[k, w, stage] = rater.loss(k, outs)
        check.append({"in": w, "stage": stage_key(stage), "loss": rater.memo[k, w, stage],
                      "other_centre": None if other is None else rater.loss(k, outs, other)})
    return {"paths": len(sample), "population": len(in_widths(cfg.space, k)) * stage_path_count(cfg.space, k),
            "rated": check}


def next_prefixes(rater: Rater, k: int, check: dict) -> dict[int, Prefix]:
    """Per width of stage `k`, the rated path into it of least summed loss (λ = 1): what feeds stage k+1."""
    best: dict[int, Prefix] = {}
    for row in check["rated"]:
        stage, fed_by = stage_of(row["stage"]), rater.prefixes[k][row["in"]]
        candidate = Prefix((*fed_by.steps, stage), fed_by.score + row["loss"])
        if stage.width not in best or candidate.score < best[stage.width].score:
            best[stage.width] = candidate
    return dict(sorted(best.items()))


# -- the search -------------------------------------------------------------------------------------------------------
def train_stage(online: nn.ModuleDict, target: nn.ModuleDict | None, cfg: MBConvBossConfig, k: int,
                prefixes: dict[int, Prefix], data, generator: torch.Generator, rng: random.Random, log) -> None:
    """`training.bossnas.eb_train` of stage `k`: each step draws an input width uniformly over `prefixes`, then
    `paths` distinct stage paths."""
    widths = sorted(prefixes)

    def draw() -> tuple[BlockRun, list[Stage]]:
        w = rng.choice(widths)
        return stage_run(cfg.space, k, prefixes[w].steps), draw_stages(cfg.space, k, cfg.paths, rng)

    eb_train(online, target, cfg, k, draw, data, generator, log)


def scores_doc(rater: Rater, checks: list[dict]) -> dict:
    """Per stage: the prefix fed from each input width, the centre check and every rated path's loss."""
    space = rater.cfg.space
    stages = []
    for k in range(space.num_stages):
        rated = [{"in": w, "stage": stage_key(st), "loss": loss} for (s, w, st), loss in rater.memo.items() if s == k]
        stages.append({"prefixes": {str(w): {"stages": [stage_key(st) for st in p.steps], "score": p.score}
                                    for w, p in rater.prefixes[k].items()},
                       "centre_check": checks[k], "losses": rated})
    return {"schema_version": SCORES_SCHEMA_VERSION, "kind": "prezoo.bossnas-scores", "family": "mbconv",
            "space": space.to_dict(), "space_hash": space.hash, "target": rater.cfg.target, "stages": stages}


def read_prefixes(scores: dict) -> list[dict[int, Prefix]]:
    return [{int(w): Prefix(tuple(stage_of(d) for d in p["stages"]), p["score"]) for w, p in s["prefixes"].items()}
            for s in scores["stages"]]


def save_nets(out: Path, online: nn.ModuleDict, centres: list[tuple[Tensor, Tensor]] | None) -> None:
    tensors = {f"online.{name}": t.contiguous() for name, t in online.state_dict().items()}
    for k, pair in enumerate(centres or []):
        tensors |= {f"centre.{k}.{i}": c.contiguous() for i, c in enumerate(pair, 1)}
    save_file(tensors, out / "nets.safetensors")


def load_rater(run: str | Path) -> Rater:
    """The rater of a finished search folder, its memo empty: every path it rates is rated anew."""
    run = Path(run)
    cfg = load_config(json.loads((run / "config.json").read_text()))
    scores = json.loads((run / "scores.json").read_text())
    online, _ = build_nets(cfg.space, cfg.target)
    tensors = load_file(run / "nets.safetensors")
    online.load_state_dict({name[len("online."):]: t for name, t in tensors.items() if name.startswith("online.")})
    centres = [(tensors[f"centre.{k}.1"], tensors[f"centre.{k}.2"]) for k in range(cfg.space.num_stages)] \
        if cfg.ssl else None
    inputs = rating_inputs(cfg, nas_data(cfg), torch.Generator().manual_seed(cfg.seed))  # as `search` drew them
    return Rater(cfg, online, inputs, read_prefixes(scores), centres)


def select(rater: Rater, log) -> tuple[list[Candidate], dict[str, float]]:
    """Every reachable params bucket searched by evolution on −score (`evolution_per_bucket`), each bucket's log line
    counting the stage paths rated so far."""
    cfg = rater.cfg
    return evolution_per_bucket(cfg.space, lambda a: -rater.score(a), cfg.buckets, cfg.population, cfg.evaluations,
                                cfg.seed, cfg.progress, lambda record: log(record | {"rated_paths": len(rater.memo)}))


def search(cfg: MBConvBossConfig, out: str | Path) -> tuple[dict, dict]:
    """Train and rate stage by stage, then search every bucket; write config.json, nets.safetensors, scores.json,
    preferred.json and log.jsonl into `out`; return the scores and preferred documents."""
    out = Path(out)
    t0 = time.perf_counter()
    data = nas_data(cfg)  # first: a data source it cannot read leaves no folder behind
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config_doc(cfg))
    torch.manual_seed(cfg.seed)
    online, target = build_nets(cfg.space, cfg.target)
    generator, rng = torch.Generator().manual_seed(cfg.seed), random.Random(cfg.seed)
    inputs = rating_inputs(cfg, data, generator)  # the generator's first draws: `load_rater` draws them again
    rater = Rater(cfg, online, inputs, [{cfg.space.stem_channels: Prefix((), 0.0)}], [] if cfg.ssl else None)
    checks, seconds = [], {}
    with (out / "log.jsonl").open("w") as f:
        log = lambda record: print(json_text(record, str(out / "log.jsonl"), indent=None), file=f, flush=True)
        for k in range(cfg.space.num_stages):
            t = time.perf_counter()
            train_stage(online, target, cfg, k, rater.prefixes[k], data, generator, rng, log)
            seconds[f"train_stage{k}"], t = time.perf_counter() - t, time.perf_counter()
            checks.append(rate_stage(rater, target, k, rng))
            seconds[f"rate_stage{k}"] = time.perf_counter() - t
            log({"event": "rate", "block": k, "paths": checks[k]["paths"], "seconds": seconds[f"rate_stage{k}"],
                 "best": min(r["loss"] for r in checks[k]["rated"])})
            if k + 1 < cfg.space.num_stages:
                rater.prefixes.append(next_prefixes(rater, k, checks[k]))
        save_nets(out, online, rater.centres)
        t = time.perf_counter()
        candidates, bucket_seconds = select(rater, log)
        seconds["select"] = time.perf_counter() - t
    scores = scores_doc(rater, checks)
    write_json(out / "scores.json", scores)
    seconds["total"] = time.perf_counter() - t0
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("space", "buckets", "progress")}
    selector = {"method": "bossnas", **settings, "optimizer": "sgd", "bucket_by": "params",
                "buckets": asdict(cfg.buckets), "top_n": 1, "search": "evolution per bucket, fitness -score",
                "rated_paths": len(rater.memo)}
    stats = {"archs": len(candidates), "seconds": seconds, "bucket_seconds": bucket_seconds}
    preferred = preferred_doc(cfg.space, selector, stats, cfg.buckets,
                              pick_preferred(candidates, cfg.buckets, "params", top_n=1), family="mbconv")
    write_preferred(preferred, out)
    return scores, preferred
