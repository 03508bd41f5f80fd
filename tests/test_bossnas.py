"""BossNAS selector (training.bossnas) on a tiny HyTra space and a few hundred Fashion-MNIST images: views, EMA,
ensemble targets, block training with a frozen prefix, rating against the centre, BN recalibration, the per-bucket
pick, preferred.json and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import eb_losses
from training.__main__ import main
from training.bossnas import (
    TARGETS,
    VIEW_1,
    VIEW_2,
    BossConfig,
    Prefix,
    arch_score,
    block_inputs,
    block_module,
    bootstrap_targets,
    build_nets,
    drop_zero_grads,
    ema_update,
    momentum_at,
    nas_data,
    path_key,
    path_outputs,
    rate_block,
    rating_inputs,
    search,
    train_step,
)
from training.preferred import Buckets, load_preferred
from zoo.families.hytra import (
    HyTraArch,
    HyTraSpace,
    block_paths,
    cost_range,
    enumerate_archs,
    layer_choices,
    params,
)

TINY = HyTraSpace("tiny", scale_channels=(8, 16, 32), head_dim=4, stem_channels=4, num_layers=4, block_size=2)
TINY_BUCKETS = Buckets(500, 8000, ratio=2)


def tiny_config(target: str = "ensemble", **kw) -> BossConfig:
    settings = dict(epochs_per_block=1, nas_train=256, nas_val=64, batch_size=64, calibration=64,
                    buckets=TINY_BUCKETS, progress=False) | kw
    return BossConfig(TINY, target=target, **settings)


@pytest.fixture(scope="module")
def data():
    return nas_data(tiny_config())


def nets(target: str = "ensemble", seed: int = 0):
    torch.manual_seed(seed)
    return build_nets(TINY, target)


def test_tiny_space_is_a_valid_space_with_every_block_input():
    assert len(enumerate_archs(TINY)) == sum(len(block_paths(TINY, p[-1][0])) for p in block_paths(TINY, 0))
    for arch in enumerate_archs(TINY):
        TINY.validate(arch)
    assert [len(block_paths(TINY, s)) for s in range(3)] == [11, 12, 4]


# -- views ------------------------------------------------------------------------------------------------------------
def test_views_are_deterministic_per_seed_and_differ_between_pipelines(data):
    x = data.train_x[:32]
    view = lambda pipeline, seed: pipeline(x, data.mean, data.std, torch.Generator().manual_seed(seed))
    assert torch.equal(view(VIEW_1, 0), view(VIEW_1, 0))
    assert not torch.equal(view(VIEW_1, 0), view(VIEW_1, 1))
    assert not torch.allclose(view(VIEW_1, 0), view(VIEW_2, 0))
    v = view(VIEW_2, 3)
    assert v.shape == x.shape and torch.isfinite(v).all()
    pixels = v * data.std[0] + data.mean[0]  # still images: within [0, 1] after undoing the normalisation
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_view_2_is_always_blurred_view_1_rarely(data):
    """Against the same pipeline without blur and the same draws (every draw is made whatever its outcome)."""
    x = data.train_x[:100]
    view = lambda pipeline: pipeline(x, data.mean, data.std, torch.Generator().manual_seed(0))
    blurred = lambda pipeline: (view(pipeline) != view(dataclasses.replace(pipeline, blur=0.0))).flatten(1).any(1)
    assert blurred(VIEW_2).float().mean() > 0.8 and blurred(VIEW_1).float().mean() < 0.3


# -- EMA and targets --------------------------------------------------------------------------------------------------
def test_momentum_schedule_is_cosine_from_base_to_one():
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    ms = [momentum_at(t, 100, 0.99) for t in range(101)]
    assert ms == sorted(ms)


def test_ema_update_moves_every_target_parameter_towards_the_online_one():
    online, target = nets()
    assert "predictors" not in target and "predictors" in online
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = {k: p.clone() for k, p in target.named_parameters()}
    theta = dict(online.named_parameters())
    ema_update(target, online, 0.9)
    for k, p in target.named_parameters():
        assert torch.allclose(p, 0.9 * before[k] + 0.1 * theta[k], atol=1e-6), k
    assert not any(p.requires_grad for p in target.parameters())


def test_ensemble_target_is_the_mean_of_the_paths_normalised_projections(data):
    _, target = nets()
    target.train()
    g = torch.Generator().manual_seed(0)
    x = data.train_x[:32]
    paths = block_paths(TINY, 0)[:3]
    views = [(VIEW_1(x, data.mean, data.std, g), VIEW_2(x, data.mean, data.std, g)) for _ in paths]
    own = bootstrap_targets(target, 0, (), paths, views, "own")
    ensemble = bootstrap_targets(target, 0, (), paths, views, "ensemble")
    for pull_1, _ in own:  # each view is pulled towards the other view's projection, normalised
        assert torch.allclose(pull_1.norm(dim=1), torch.ones(32), atol=1e-5)
    mean_2, mean_1 = (torch.stack(ts).mean(dim=0) for ts in zip(*own, strict=True))
    for pull_1, pull_2 in ensemble:
        assert torch.allclose(pull_1, mean_2, atol=1e-6) and torch.allclose(pull_2, mean_1, atol=1e-6)
    assert not torch.allclose(own[0][0], own[1][0], atol=1e-3)  # paths differ, so the ensemble is not any one


# -- training ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_loss_decreases_over_a_few_steps(data, target):
    cfg = tiny_config(target)
    paths = block_paths(TINY, 0)[:cfg.paths]
    losses = eb_losses(*nets(target), lambda online, ema: train_step(  # the same batch, views and paths every step
        online, ema, cfg, 0, (), paths, data.train_x[:32], data.train_y[:32], data.mean, data.std,
        torch.Generator().manual_seed(0)), steps=5)
    assert losses[-1] < 0.93 * losses[0], losses


@pytest.mark.parametrize("target", ["ensemble", "supervised"])
def test_frozen_prefix_gets_no_gradient(data, target):
    cfg = tiny_config(target)
    online, ema = nets(target)
    online.train()
    prefix = ((0, "conv"), (1, "att"))
    paths = block_paths(TINY, 1)[:cfg.paths]
    train_step(online, ema, cfg, 1, prefix, paths, data.train_x[:32], data.train_y[:32], data.mean, data.std,
               torch.Generator().manual_seed(0))
    modules = lambda first, in_scale, steps: [p for layer in online["supernet"].layers(
        layer_choices(TINY, first, in_scale, steps)) for m in layer for p in m.parameters()]
    frozen = list(online["supernet"].stem.parameters()) + modules(0, 0, prefix)
    assert all(p.grad is None for p in frozen)
    assert any(p.grad is not None and p.grad.any() for p in modules(2, 1, paths[0]))


def test_block_0_trains_the_stem(data):
    cfg = tiny_config()
    online, ema = nets()
    online.train()
    ema.train()
    train_step(online, ema, cfg, 0, (), block_paths(TINY, 0)[:2], data.train_x[:32], data.train_y[:32], data.mean,
               data.std, torch.Generator().manual_seed(0))
    assert all(p.grad is not None and p.grad.any() for p in online["supernet"].stem.parameters())


def test_zero_gradients_are_dropped():
    online, _ = nets()
    p, q = list(online.parameters())[:2]
    p.grad, q.grad = torch.zeros_like(p), torch.ones_like(q)
    drop_zero_grads(online)
    assert p.grad is None and q.grad is not None


# -- rating -----------------------------------------------------------------------------------------------------------
def test_rating_is_deterministic_and_covers_every_path_of_every_input(data):
    cfg = tiny_config()
    online, ema = nets()
    inputs = rating_inputs(cfg, data, torch.Generator().manual_seed(0))
    prefixes = {0: Prefix(((0, "conv"), (0, "conv")), 0.0), 1: Prefix(((0, "conv"), (1, "att")), 0.0),
                2: Prefix(((1, "conv"), (2, "conv")), 0.0)}
    first = rate_block(online, ema, cfg, 1, prefixes, inputs)
    assert first == rate_block(online, ema, cfg, 1, prefixes, inputs)
    assert {s: set(t) for s, t in first.items()} == {s: set(block_paths(TINY, s)) for s in range(3)}
    losses = [v for t in first.values() for v in t.values()]
    assert all(0 <= v <= 8 and math.isfinite(v) for v in losses) and len(set(losses)) > len(losses) // 2


def test_supervised_rating_is_validation_cross_entropy(data):
    cfg = tiny_config("supervised")
    online, _ = nets("supervised")
    inputs = rating_inputs(cfg, data, torch.Generator().manual_seed(0))
    losses = rate_block(online, None, cfg, 0, {0: Prefix((), 0.0)}, inputs)
    steps = block_paths(TINY, 0)[4]
    fed = block_inputs(online, (), inputs)
    logits = path_outputs(online, 0, 0, steps, fed)[0]
    assert losses[0][steps] == pytest.approx(float(F.cross_entropy(logits, data.val_y)))
    assert inputs.val[0] is data.val_x  # plain images, as a classifier is validated


def test_bn_recalibration_changes_running_stats_and_restores_momentum(data):
    cfg = tiny_config()
    online, _ = nets()
    inputs = rating_inputs(cfg, data, torch.Generator().manual_seed(0))
    steps = ((0, "conv"), (1, "att"))
    module = block_module(online, 0, 0, steps)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in norms)  # the heads' too (predictor included)
    before = [m.running_var.clone() for m in norms]
    path_outputs(online, 0, 0, steps, block_inputs(online, (), inputs))
    assert all(not torch.equal(m.running_var, b) for m, b in zip(norms, before, strict=True))
    assert all(m.momentum == 0.1 and not m.training for m in norms)


# -- the whole search, selection, output ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("bossnas")
    scores, preferred = search(tiny_config(), out)
    return out, scores, preferred


def test_search_writes_scores_for_every_arch_and_a_log(searched):
    out, scores, _ = searched
    assert json.loads((out / "scores.json").read_text()) == scores
    block_1 = scores["blocks"][1]
    assert set(block_1["prefixes"]) == {"0", "1", "2"}  # fed from the best block-0 path into each scale
    for s, prefix in block_1["prefixes"].items():
        layers = [tuple(x) for x in prefix["layers"]]
        assert layers[-1][0] == int(s)
        best = min(v for k, v in scores["blocks"][0]["losses"]["0"].items() if k.split()[-1].startswith(f"S{s}"))
        assert prefix["score"] == pytest.approx(best) and scores["blocks"][0]["losses"]["0"][path_key(layers)] == best
    all_scores = [arch_score(scores, a) for a in enumerate_archs(TINY)]
    assert all(math.isfinite(v) for v in all_scores)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {(r["event"], r["block"]) for r in records} == {("train", 0), ("rate", 0), ("train", 1), ("rate", 1)}
    assert all(r["img_s"] > 0 for r in records if r["event"] == "train")


def test_each_bucket_gets_its_least_loss_arch(searched):
    _, scores, preferred = searched
    archs = enumerate_archs(TINY)
    for (lo, hi), bucket in zip(TINY_BUCKETS.edges(), preferred["buckets"], strict=True):
        inside = [a for a in archs if lo <= params(TINY, a) < hi]
        assert len(bucket["entries"]) == min(1, len(inside))
        for e in bucket["entries"]:
            assert lo <= e["params"] < hi
            assert e["score"] == pytest.approx(-min(arch_score(scores, a) for a in inside))


def test_preferred_json_is_the_zero_cost_schema_with_hytra_paths(searched):
    out, _, preferred = searched
    doc = json.loads((out / "preferred.json").read_text())
    assert doc == preferred
    assert doc["kind"] == "prezoo.preferred" and doc["schema_version"] == 1 and doc["family"] == "hytra"
    space = HyTraSpace.from_dict(doc["space"])
    assert space == TINY and doc["space_hash"] == TINY.hash
    sel = doc["selector"]
    assert sel["method"] == "bossnas" and sel["target"] == "ensemble" and sel["bucket_by"] == "params"
    assert Buckets(**sel["buckets"]) == TINY_BUCKETS
    assert {"train_block0", "rate_block0", "train_block1", "rate_block1"} <= doc["stats"]["seconds"].keys()
    entries = [e for b in doc["buckets"] for e in b["entries"]]
    assert entries
    for e in entries:
        arch = space.validate(HyTraArch.from_dict(e["arch"]))
        assert arch.id == e["id"] and e["params"] == params(space, arch)
    loaded_space, loaded = load_preferred(out / "preferred.json")  # what the trainer reads: the family's loader
    assert loaded_space == TINY and loaded == entries


def test_arch_score_sums_the_blocks_losses(searched):
    _, scores, _ = searched
    arch = HyTraArch(((0, "conv"), (1, "att"), (2, "att"), (2, "conv")))
    blocks = scores["blocks"]
    assert arch_score(scores, arch) == blocks[0]["losses"]["0"]["S0c S1a"] + blocks[1]["losses"]["1"]["S2a S2c"]
    with pytest.raises(ValueError, match="layer 1"):
        arch_score(scores, HyTraArch(((0, "conv"), (2, "conv"), (2, "conv"), (2, "conv"))))


def test_the_benchmark_reports_how_far_two_selector_runs_agree(searched, tmp_path):
    """A run against itself agrees perfectly; against its own scores turned upside down (every loss negated), tau is
    -1 over the whole space, and its preference for size is the opposite one."""
    from bench.bench_bossnas import load_run, report_agreement

    out, scores, preferred = searched
    flipped = {**scores, "blocks": [{**b, "losses": {s: {k: -v for k, v in table.items()}
                                                      for s, table in b["losses"].items()}} for b in scores["blocks"]]}
    (tmp_path / "scores.json").write_text(json.dumps(flipped))
    (tmp_path / "preferred.json").write_text(json.dumps(preferred))
    runs = {name: load_run(str(folder)) for name, folder in (("a", out), ("b", out), ("upside-down", tmp_path))}
    printed = "\n".join(report_agreement(TINY, runs, enumerate_archs(TINY), [("a", "b"), ("a", "upside-down")]))
    picks = sum(len(b["entries"]) for b in preferred["buckets"])
    assert f"| a vs b | +1.00 | {picks} of {picks} buckets |" in printed
    assert f"| a vs upside-down | -1.00 | {picks} of {picks} buckets |" in printed  # the picks file was copied
    size_preference = dict(re.findall(r"^\| (a|upside-down) \| ([+-][0-9.]+) \| [0-9.]+ \|$", printed, re.M))
    assert float(size_preference["a"]) == -float(size_preference["upside-down"]) != 0


def test_the_benchmark_separates_what_the_input_scales_add_to_a_score(searched):
    """A constant added to every block-1 loss entered from one scale moves a part of the space as one: the input
    scales then explain nearly all of the score's variance, and the centred scores, tau and size preference do not
    change at all. Centring keeps the order of paths that enter their blocks at the same scales."""
    from bench.bench_bossnas import input_scales, report_input_scales, scale_centred, scale_share

    _, scores, _ = searched
    first, second = scores["blocks"]
    shifted = {**scores, "blocks": [first, {**second, "losses": {
        s: {k: v + (1e3 if s == "2" else 0.0) for k, v in table.items()} for s, table in second["losses"].items()}}]}
    archs = enumerate_archs(TINY)
    assert scale_share(shifted, archs) > 0.99 and scale_share(shifted, archs) > scale_share(scores, archs)
    centred = scale_centred(scores)
    assert all(abs(sum(t.values())) < 1e-9 for b in centred["blocks"] for t in b["losses"].values())
    for a in archs:
        assert arch_score(scale_centred(shifted), a) == pytest.approx(arch_score(centred, a), abs=1e-9)
    same_entry = [a for a in archs if input_scales(TINY, a) == input_scales(TINY, archs[0])]
    assert len(same_entry) > 1
    for a in same_entry:
        assert arch_score(centred, a) - arch_score(centred, archs[0]) == pytest.approx(
            arch_score(scores, a) - arch_score(scores, archs[0]), abs=1e-9)
    gt = archs[::7]
    printed = "\n".join(report_input_scales(TINY, {"raw": scores, "shifted": shifted}, gt,
                                             [params(TINY, a) for a in gt], archs))
    rows = dict(re.findall(r"^\| (raw|shifted) \| [0-9.]+ \| (.+) \|$", printed, re.M))
    assert rows["raw"] == rows["shifted"]


# -- configuration and CLI --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"target": "teacher"}, "target must be one of"),
    ({"paths": 0}, r"paths must be an int in \[1, 1,024\], got 0"),
    ({"batch_size": 512}, "no full batch"),
    ({"seed": -1}, r"seed must be an int in \[0, 4,294,967,295\], got -1"),
    ({"lr": float("nan")}, r"lr must be a float in \(0, 10\], got nan"),
    ({"momentum_base": 1.5}, r"momentum_base must be a float in \[0, 1\]"),
])
def test_config_rejects_bad_settings(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)


def test_a_space_without_default_buckets_gets_a_round_grid_over_its_params():
    buckets, ((lo, hi), _) = BossConfig(TINY).buckets, cost_range(TINY)
    assert buckets.width and buckets.low <= lo and hi < buckets.high and 6 <= buckets.count <= 10


@pytest.mark.parametrize("argv, message", [
    (["--target", "teacher"], "invalid choice: 'teacher'"),
    (["--nas-train", "many"], "argument --nas-train: 'many' is not an int in [1, 100,000,000]"),
    (["--nas-train", "0"], "argument --nas-train: '0' is not an int in"),
    (["--threads", "0"], "argument --threads: '0' is not an int in [1, 1,024]"),
    (["--paths", "1e30"], "argument --paths"),
    (["--data", ""], "argument --data: an empty value names nothing"),
])
def test_cli_rejects_bad_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bossnas", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--nas-val", "6000"], "nas_val 6000 exceeds the 5000 images"),
    (["--data", "nowhere:x"], "nowhere"),
    (["--data", "synthetic:64"], "val_size 5000 leaves no training data"),
])
def test_cli_explains_bad_values(tmp_path, capsys, argv, message):
    assert main(["bossnas", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert not (tmp_path / "out").exists()  # nothing half-written: the data is read before the folder is made
