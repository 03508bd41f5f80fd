"""BossNAS on an MBConv space (training.bossnas_mbconv) on mbconv-tiny and synthetic images: stage paths and their
samples, heads per (stage, width), EB training by stage with a frozen prefix, the centre from paths of several widths,
the lazy rating and its memo (recomputed after a reload), the prefixes, preferred.json and the command line."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from tests.conftest import eb_losses
from training.__main__ import BOSSNAS, main, parse_args, selector_config, space_for
from training.bossnas import (
    PROJ_OUT,
    TARGETS,
    BossConfig,
    Prefix,
    eb_step,
    feed,
    nas_data,
    outputs,
    rating_inputs,
)
from training.bossnas_mbconv import (
    MBConvBossConfig,
    build_nets,
    centre_of,
    centre_sample,
    draw_stages,
    load_rater,
    prefix_module,
    search,
    stage_module,
    stage_of,
    stage_path_count,
    stage_paths,
    stage_run,
)
from training.preferred import Buckets, load_preferred
from zoo.families.mbconv import MBConvArch
from zoo.families.mbconv.layers import params
from zoo.families.mbconv.space import MBCONV_TINY as TINY
from zoo.families.mbconv.space import Stage
from zoo.family import get_family

BUCKETS = Buckets(2_000, 34_000, width=8_000)


def tiny_config(target: str = "ensemble", **kw) -> MBConvBossConfig:
    settings = dict(data="synthetic:600", val_size=200, epochs_per_block=1, nas_train=256, nas_val=64,
                    batch_size=64, calibration=64, centre_paths=8, evaluations=12, population=6, buckets=BUCKETS,
                    progress=False) | kw
    return MBConvBossConfig(TINY, target=target, **settings)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return nas_data(tiny_config())


def nets(target: str = "ensemble"):
    torch.manual_seed(0)
    return build_nets(TINY, target)


def a_stage(width: int, *blocks: list) -> Stage:
    return stage_of({"width": width, "blocks": list(blocks)})


# -- stage paths ------------------------------------------------------------------------------------------------------
def test_stage_paths_are_counted_and_drawn_distinct():
    assert [stage_path_count(TINY, k) for k in range(3)] == [2 * 11, 2 * (11 + 121), 2 * (11 + 121)]
    assert len(set(stage_paths(TINY, 0))) == stage_path_count(TINY, 0)
    drawn = draw_stages(TINY, 1, 20, random.Random(0))
    assert len(set(drawn)) == 20 and all(s.width in TINY.widths[1] and 1 <= len(s.blocks) <= 2 for s in drawn)


def test_the_centre_sample_covers_every_pair_of_a_small_stage_and_many_widths_of_a_large_one():
    assert centre_sample(TINY, 0, 64, random.Random(0)) == [(8, s) for s in stage_paths(TINY, 0)]  # 22 pairs
    sample = centre_sample(TINY, 2, 40, random.Random(0))
    assert len(set(sample)) == 40
    assert {w for w, _ in sample} == set(TINY.widths[1]) and {s.width for _, s in sample} == set(TINY.widths[2])
    assert sample == centre_sample(TINY, 2, 40, random.Random(0)) != centre_sample(TINY, 2, 40, random.Random(1))


# -- nets and EB training ---------------------------------------------------------------------------------------------
def test_the_projector_has_a_head_per_stage_and_width_into_one_space(data):
    online, target = nets()
    assert [set(h.per_scale) for h in online["heads"]] == [{f"w{w}" for w in ws} for ws in TINY.widths]
    assert "predictors" not in target
    online.eval()
    x = data.train_x[:8]
    for width in TINY.widths[0]:
        run = stage_run(TINY, 0, ())
        out = run.path(online, a_stage(width, ["fused", 3, 2, False]))(run.prefix(online)(x))
        assert out.shape == (8, PROJ_OUT)


@pytest.mark.parametrize("target", TARGETS)
def test_eb_training_moves_the_loss(data, target):
    """Stage 1 after a fixed stage-0 path: the same batch, views and paths every step."""
    cfg = tiny_config(target)
    run = stage_run(TINY, 1, (a_stage(12, ["residual", 3, 1, False]),))
    paths = draw_stages(TINY, 1, cfg.paths, random.Random(0))
    losses = eb_losses(*nets(target), lambda online, ema: eb_step(
        online, ema, cfg, run, paths, data.train_x[:32], data.train_y[:32], data.mean, data.std,
        torch.Generator().manual_seed(0)), steps=8)
    assert losses[-1] < 0.93 * losses[0], losses


def test_a_later_stage_leaves_the_stem_and_its_prefix_alone_and_stage_0_trains_the_stem(data):
    cfg = tiny_config()
    prefix = (a_stage(8, ["mbconv", 5, 3, True]),)
    step = lambda online, ema, k, pre, paths: eb_step(online, ema, cfg, stage_run(TINY, k, pre), paths,
                                                      data.train_x[:32], data.train_y[:32], data.mean, data.std,
                                                      torch.Generator().manual_seed(0))
    online, ema = nets()
    step(online, ema, 1, prefix, draw_stages(TINY, 1, 2, random.Random(0)))
    supernet = online["supernet"]
    assert all(p.grad is None for p in [*supernet.stem.parameters(), *supernet.stages[0].parameters()])
    assert any(p.grad is not None and p.grad.any() for p in supernet.stages[1].parameters())
    online, ema = nets()
    step(online, ema, 0, (), draw_stages(TINY, 0, 2, random.Random(0)))
    assert all(p.grad is not None and p.grad.any() for p in online["supernet"].stem.parameters())


def test_the_centre_is_the_mean_projection_of_the_sampled_paths_of_several_widths(data):
    cfg = tiny_config()
    _, ema = nets()
    inputs = rating_inputs(cfg, data, torch.Generator().manual_seed(0))
    prefixes = {w: Prefix((a_stage(w, ["fused", 3, 1, False]),), 0.0) for w in TINY.widths[0]}
    fed = {w: feed(prefix_module(ema, p.steps), inputs) for w, p in prefixes.items()}
    sample = centre_sample(TINY, 1, 6, random.Random(0))
    assert len({s.width for _, s in sample}) > 1
    c1, c2 = centre_of(ema, 1, sample, fed, prefixes, progress=False)
    each = [outputs(stage_module(ema, 1, prefixes[w].steps, s), fed[w]) for w, s in sample]
    assert torch.allclose(c1, torch.stack([o[0] for o in each]).mean(0), atol=1e-5)
    assert torch.allclose(c2, torch.stack([o[1] for o in each]).mean(0), atol=1e-5)


# -- the whole search -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("bossnas-mbconv")
    scores, preferred = search(tiny_config(), out)
    return out, scores, preferred


def stored_loss(scores: dict, k: int, width: int, stage: Stage) -> float:
    rows = [r["loss"] for r in scores["stages"][k]["losses"] if r["in"] == width and stage_of(r["stage"]) == stage]
    assert len(rows) == 1
    return rows[0]


def test_search_writes_every_file_and_logs_each_stage(searched):
    out, scores, preferred = searched
    assert {p.name for p in out.iterdir()} == {"config.json", "nets.safetensors", "scores.json", "preferred.json",
                                               "log.jsonl"}
    assert json.loads((out / "scores.json").read_text()) == scores
    assert json.loads((out / "preferred.json").read_text()) == preferred
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {(r["event"], r["block"]) for r in records if "block" in r} == {(e, k) for e in ("train", "rate")
                                                                           for k in range(3)}
    assert sum(r["event"] == "bucket" for r in records) == BUCKETS.count


def test_each_stage_centre_comes_from_paths_of_several_widths_and_is_checked_against_a_second(searched):
    _, scores, _ = searched
    for k, stage in enumerate(scores["stages"]):
        check = stage["centre_check"]
        assert check["paths"] == len(check["rated"]) == min(8, check["population"])
        assert len({r["stage"]["width"] for r in check["rated"]}) > 1
        assert k == 0 or len({r["in"] for r in check["rated"]}) > 1
        assert all(math.isfinite(r["other_centre"]) and r["other_centre"] != r["loss"] for r in check["rated"])


def test_each_prefix_is_the_best_rated_path_into_its_width(searched):
    _, scores, _ = searched
    for k in range(2):
        fed, nxt = scores["stages"][k]["prefixes"], scores["stages"][k + 1]["prefixes"]
        assert set(nxt) == {str(w) for w in TINY.widths[k]}
        for w, prefix in nxt.items():
            into = [fed[str(r["in"])]["score"] + r["loss"] for r in scores["stages"][k]["centre_check"]["rated"]
                    if r["stage"]["width"] == int(w)]
            assert prefix["score"] == pytest.approx(min(into)) and prefix["stages"][-1]["width"] == int(w)


def test_a_reloaded_rater_rates_an_arch_as_the_sum_of_its_stored_stage_losses(searched):
    """Every preferred arch's stage paths were rated during the search; a rater loaded from the folder rates them
    anew (memo empty) to the same losses, and an arch's score is their sum, each stage path from its input width."""
    out, scores, preferred = searched
    rater = load_rater(out)
    assert not rater.memo
    entries = [e for b in preferred["buckets"] for e in b["entries"]]
    for e in entries:
        arch = MBConvArch.from_dict(e["arch"])
        widths = (TINY.stem_channels, *(st.width for st in arch.stages[:-1]))
        keys = [(k, w, st) for k, (w, st) in enumerate(zip(widths, arch.stages, strict=True))]
        stored = [stored_loss(scores, *key) for key in keys]
        assert rater.score(arch) == pytest.approx(sum(stored), abs=1e-6) == -e["score"]
        assert [rater.memo[key] for key in keys] == pytest.approx(stored, abs=1e-6)


def test_preferred_json_holds_one_arch_per_bucket_inside_it(searched):
    out, _, preferred = searched
    space, entries = load_preferred(out / "preferred.json")
    assert space == TINY and preferred["family"] == "mbconv"
    assert preferred["selector"]["method"] == "bossnas" and Buckets(**preferred["selector"]["buckets"]) == BUCKETS
    for b in preferred["buckets"]:
        assert len(b["entries"]) <= 1
        for e in b["entries"]:
            assert b["low"] <= e["params"] == params(TINY, MBConvArch.from_dict(e["arch"])) < b["high"]
    assert len(entries) >= BUCKETS.count - 1  # the evolution reaches (nearly) every bucket of the space


def test_the_supervised_baseline_rates_by_validation_cross_entropy_without_centres(tmp_path):
    _, preferred = search(tiny_config("supervised", evaluations=3, population=2), tmp_path)
    rater = load_rater(tmp_path)
    assert rater.centres is None
    entry = next(e for b in preferred["buckets"] for e in b["entries"])
    arch = MBConvArch.from_dict(entry["arch"])
    assert rater.score(arch) == pytest.approx(-entry["score"], abs=1e-6)
    k, w, stage = next(iter(rater.memo))
    logits = rater.outputs(k, w, stage)[0]
    assert logits.shape == (64, TINY.num_classes)
    expected = torch.nn.functional.cross_entropy(logits, rater.inputs.val_y)
    assert rater.memo[k, w, stage] == pytest.approx(float(expected))


# -- configuration and command line -----------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"paths": 23}, "paths 23 exceeds the 22 paths of stage 0 of mbconv-tiny"),
    ({"centre_paths": 1}, r"centre_paths must be an int in \[2, 4,096\], got 1"),
    ({"evaluations": 0}, r"evaluations must be an int in \[1, 100,000\]"),
    ({"target": "teacher"}, "target must be one of"),
    ({"batch_size": 512}, "no full batch"),
])
def test_config_rejects_bad_settings(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)


def test_configs_keep_to_their_family():
    with pytest.raises(ValueError, match="MBConvBossConfig searches a MBConvSpace, got HyTraSpace"):
        MBConvBossConfig(get_family("hytra").spaces["micro-hytra"])
    with pytest.raises(ValueError, match="BossConfig searches a HyTraSpace, got MBConvSpace"):
        BossConfig(TINY)


def bossnas_config(args):
    return selector_config(args, space_for(args.space, "bossnas"), "bossnas", BOSSNAS)


def test_the_command_dispatches_by_the_spaces_family():
    assert type(bossnas_config(parse_args(["bossnas", "--space", "mbconv-tiny", "--centre-paths", "9"]))) \
        is MBConvBossConfig
    cfg = bossnas_config(parse_args(["bossnas", "--space", "mbconv-tiny", "--centre-paths", "9"]))
    assert cfg.space == TINY and cfg.centre_paths == 9 and cfg.evaluations == MBConvBossConfig.evaluations
    assert type(bossnas_config(parse_args(["bossnas"]))) is BossConfig


@pytest.mark.parametrize("argv, message", [
    (["--centre-paths", "8"],
     "error: --centre-paths does not apply to `python -m training bossnas` on HyTra spaces (micro-hytra)"),
    (["--space", "mbconv-tiny", "--paths", "30"], "error: paths 30 exceeds the 22 paths of stage 0"),
    (["--space", "mini"], "error: space mini is a ViT space, which `python -m training bossnas` does not serve"),
    (["--space", "mbconv-tiny", "--data", "synthetic:64"], "error: val_size 5000 leaves no training data"),
])
def test_the_command_explains_bad_settings(tmp_path, capsys, argv, message):
    assert main(["bossnas", "--out", str(tmp_path / "out"), *argv]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--centre-paths", "1"], "argument --centre-paths: '1' is not an int in [2, 4,096]"),
    (["--population", "0"], "argument --population"),
    (["--evaluations", "1e9"], "argument --evaluations"),
    (["--space", " "], "argument --space: an empty value names nothing"),
])
def test_the_command_refuses_bad_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bossnas", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
