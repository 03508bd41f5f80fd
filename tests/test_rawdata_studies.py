"""The BossNAS, selector-accuracy and search studies write their raw results to bench/data/, and `python -m bench
report` builds their tables from them: each renderer checked against a small raw file worked out by hand, and each
benchmark run end to end at its smallest settings on a tiny space or a briefly trained supernet (whose recorded seed,
not 0, decides the validation split) into a raw file that `bench report` renders and `--check` accepts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import RENDERERS, bossnas, search, selector_accuracy
from tests.conftest import torch_threads
from training.bossnas import BossConfig, path_key
from training.bossnas import search as boss_search
from training.preferred import Buckets
from zoo.families.hytra import HyTraArch, HyTraSpace, block_paths, params
from zoo.families.vit.space import get_space

ROOT = Path(__file__).resolve().parents[1]
TINY = HyTraSpace("tiny", scale_channels=(8, 16, 32), head_dim=4, stem_channels=4, num_layers=4, block_size=2)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the benchmarks' own setting; two threads on a busy box crawl




def bench_report(results: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "report", "--results", str(results), "--data", str(data),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ONE_THREAD)


def rows_of(table: str, first: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith(f"| {first} ")]


# -- renderers on raw files worked out by hand ------------------------------------------------------------------------
def test_the_three_studies_are_registered_under_their_data_folders():
    assert RENDERERS["bossnas"] is bossnas and RENDERERS["selector-accuracy"] is selector_accuracy
    assert RENDERERS["search"] is search


def _tiny_bossnas_raw() -> dict:
    """Four ground-truth paths entering block 1 at S1 (70-85%), two of them trained again; run `perfect` scores each
    path its accuracy / 100 (block 0 loses nothing, block 1 loses -accuracy / 100 on exactly those paths), run
    `upside-down` every loss negated; one pick with three random paths of equal params."""
    firsts = [p for p in block_paths(TINY, 0) if p[-1][0] == 1]
    seconds = block_paths(TINY, 1)
    archs = [HyTraArch(firsts[k % len(firsts)] + seconds[k]) for k in range(4)]
    accs = [70.0, 75.0, 80.0, 85.0]
    row = lambda label, a, seed, top1: {"label": label, "id": a.id, "arch": a.to_dict(), "seed": seed,
                                        "params": params(TINY, a), "att": 0, "epochs": 1, "test_images": 100,
                                        "top1": top1}
    gt = [row(f"p{k}", a, 0, t) for k, (a, t) in enumerate(zip(archs, accs, strict=True))]
    gt += [row("p0", archs[0], 1, 72.0), row("p1", archs[1], 1, 75.0)]  # re-runs: squared deviations 2 and 0
    losses = [{"0": {path_key(p): 0.0 for p in block_paths(TINY, 0)}},
              {str(s): {path_key(p): 0.0 for p in block_paths(TINY, s)} for s in (0, 1, 2)}]
    for a, t in zip(archs, accs, strict=True):
        losses[1]["1"][path_key(a.layers[2:])] = -t / 100
    pick = {"bucket": [1000, 2000], "id": archs[3].id, "layers": archs[3].to_dict()["layers"]}
    run = lambda sign: {"source": "-", "space_hash": TINY.hash, "selector": {},
                        "blocks": [{"losses": {s: {k: sign * v for k, v in t.items()} for s, t in b.items()}}
                                   for b in losses], "picks": [pick]}
    study = [{**row("pick0", archs[3], 0, 80.0), "bucket": [1000, 1400], "params": 1400}]
    study += [{**row("random0", archs[k], 0, t), "bucket": [1000, 1400]} for k, t in enumerate((78.0, 82.0, 76.0))]
    return {"space": TINY.to_dict(), "ground_truth": gt, "runs": {"perfect": run(1), "upside-down": run(-1)},
            "pairs": [["perfect", "upside-down"]], "picks": study,
            "ratings": {"minus accuracy": {"source": "-", "scores": {a.id: -t for a, t in zip(archs, accs,
                                                                                            strict=True)}}}}


def test_the_bossnas_tables_by_hand():
    table = bossnas(_tiny_bossnas_raw())
    assert "`tiny`: 4 paths trained from scratch (1 epoch(s), seed 0), top-1 on 100 test images: 70.00–85.00%" in table
    # pooled seed-to-seed sd: sqrt((2 + 0) / 2 dof) = 1.00 pp over the 2 re-trained paths
    assert "Noise ceiling: 2 paths trained again under other seeds, pooled seed-to-seed sd 1.00 pp (2 degrees" in table
    perfect, upside_down = " | ".join(["+1.00 [+1.00, +1.00]"] * 3), " | ".join(["-1.00 [-1.00, -1.00]"] * 3)
    assert f"| perfect | {perfect} |" in table and f"| upside-down | {upside_down} |" in table
    assert f"| minus accuracy | {upside_down} |" in table  # another selector's scores, one per path
    assert rows_of(table, "params alone (no search at all)") and rows_of(table, "MACs alone")
    # over the whole space the two runs' scores are each other's negatives; they made the same one pick
    assert "| perfect vs upside-down | -1.00 | 1 of 1 buckets |" in table
    size = {name: float(re.search(rf"^\| {name} \| ([+-][0-9.]+) \| [0-9.]+ \|$", table, re.M)[1])
            for name in ("perfect", "upside-down")}
    assert size["perfect"] == -size["upside-down"] != 0
    # every ground-truth path enters block 1 at S1: centring moves them all by one constant, the order stays
    assert re.search(r"^\| perfect \| [01]\.\d\d \| \+1\.00 \[\+1\.00, \+1\.00\] \| [+-]\d\.\d\d \|$", table, re.M)
    # the pick (80.00) against 78, 82, 76: mean 78.67, sd 3.055, t(2) 4.3027 -> ± 7.59; one random path beats it
    assert "| [1K, 1K) | " in table and "| 1K | 80.00 | 78.67 ± 7.59 (3) | 2 of 4 | - |" in table
    assert "replicate under another seed" not in table  # no tagged rating: no agreement line


def test_the_bossnas_tables_give_each_rating_its_agreement_with_its_tagged_replicate():
    raw = _tiny_bossnas_raw()
    scores = raw["ratings"]["minus accuracy"]["scores"]
    raw["ratings"]["minus accuracy s1"] = {"source": "-", "scores": {i: -v for i, v in scores.items()}}
    raw["ratings"]["unrelated s1"] = {"source": "-", "scores": scores}  # a tag with nothing to pair: no entry
    assert ("Each rating against its replicate under another seed, over the 4 paths (no ground truth involved): "
            "minus accuracy vs minus accuracy s1: τ -1.00.") in bossnas(raw)


def test_the_selector_accuracy_tables_by_hand():
    archs = {"a": 84.0, "b": 85.0, "c": 83.0, "pA": 84.5, "pB": 85.0, "d": 79.0, "e": 81.0, "pC": 82.0, "pD": 80.0}
    raw = {"study": "buckets", "space": get_space("ladder").to_dict(), "supernet": "s", "seeds": 2, "random": 3,
           "validation": {"source": "fashion-mnist", "seed": 3, "images": 5000},
           "archs": {k: {"params": 12_000, "val_top1": v} for k, v in archs.items()},
           "groups": [{"bucket": [10_000, 14_142.1], "random": ["a", "b", "c"],
                       "picks": {"snip-normalised": ["pA", "pB"], "snip": ["pA", None]}},
                      {"bucket": [14_142.1, 20_000], "random": ["d", "e"],
                       "picks": {"snip-normalised": ["pC", "pD"], "snip": ["pC", "pD"]}}]}
    table = selector_accuracy(raw)
    assert "validation top-1 on 5,000 images held out of its training (fashion-mnist, seed 3)" in table
    # best-rank: 84.5 is beaten by 85 of 3 -> 0.33; 85.0 ties 85 -> 0.5 / 3 = 0.17; 82 beats 79, 81 -> 0; 80 -> 0.5
    assert "| [10.0K, 14.1K) | 84.00 / 85.00 (n=3) | 84.50 (0.33), 85.00 (0.17) | 84.50 (0.33) |" in table
    assert "| [14.1K, 20.0K) | 80.00 / 81.00 (n=2) | 82.00 (0.00), 80.00 (0.50) | 82.00 (0.00), 80.00 (0.50) |" in table
    # mBR per seed: (1/3 + 0) / 2, (1/6 + 1/2) / 2 -> mean 0.25, sd 0.1179, t(1) 12.7062 / sqrt 2 -> ± 1.059;
    # plain SNIP's seed 1 has no pick in the first bucket: 0.5 alone
    assert "| snip-normalised | 0.250 ± 1.059 | 0.167, 0.333 |" in table
    assert "| snip | 0.333 ± 2.118 | 0.167, 0.500 |" in table


def test_the_isomer_tables_give_each_pick_its_bottom_share():
    space = get_space("isomer")
    low = {"num_heads": [3, 3, 3, 1, 1, 1], "mlp_ratios": [2.0] * 6}  # heads all low (1.0), ratios even (0.5)
    high = {"num_heads": [1, 1, 1, 3, 3, 3], "mlp_ratios": [2.0] * 6}  # heads all high (0.0), ratios even (0.5)
    arch = lambda alloc: {"embed_dim": 64, "depth": 6, **alloc}
    raw = {"study": "isomers", "space": space.to_dict(), "supernet": "s", "seeds": 2, "random": 2,
           "validation": {"source": "fashion-mnist", "seed": 0, "images": 5000},
           "archs": {"low": {"params": 1, "val_top1": 85.5, "arch": arch(low)},
                     "high": {"params": 1, "val_top1": 85.0, "arch": arch(high)},
                     "r1": {"params": 1, "val_top1": 85.2, "arch": arch(low)},
                     "r2": {"params": 1, "val_top1": 84.8, "arch": arch(high)}},
           "groups": [{"totals": [12, 12.0], "isomers": 19_881, "params": 206_000, "random": ["r1", "r2"],
                       "picks": {"snip-normalised": ["low", "high"], "snip": ["low", "low"]}}]}
    table = selector_accuracy(raw)
    assert ("| 12, 12 (19,881) | 206K | 85.00 / 85.20 (n=2) | 85.50 (0.00; 0.75), 85.00 (0.50; 0.25) | "
            "85.50 (0.00; 0.75), 85.50 (0.00; 0.75) |") in table
    assert "0.5 = even, above = wide-low): snip-normalised 0.500, snip 0.750" in table


def test_the_search_tables_by_hand():
    archs = {"sel": (22_000, 86.0, 83.77), "a": (28_000, 86.68, 85.60), "b": (26_000, 86.00, 85.00)}
    searches = [{"algorithm": alg, "seed": s, "best": best, "evaluations": 50, "seconds": sec}
                for alg, s, best, sec in (("evolution", 0, "a", 80), ("evolution", 1, "b", 90), ("random", 0, "a", 84),
                                          ("random", 1, "a", 84))]
    raw = {"space": "ladder", "zoo": "z", "uniform": "u", "machine": "m", "select_s": 0.54,
           "settings": {"evaluations": 50, "population": 10, "seeds": 2},
           "validation": {"source": "fashion-mnist", "seed": 0, "images": 5000}, "test_images": 10_000,
           "archs": {k: {"params": p, "val_top1": v, "test_top1": t} for k, (p, v, t) in archs.items()},
           "buckets": [{"bucket": [20_000, 28_284.3], "selection": {"arch": "sel", "test_zoo": 86.15},
                        "searches": searches}]}
    table = search(raw)
    assert ("| [20K, 28K) | sel (22K): 83.77 / **86.15** | 86.34 (86.00-86.68) / 85.30 (85.00-85.60), 27 (26-28)K | "
            "86.68 (86.68-86.68) / 85.60 (85.60-85.60), 28 (28-28)K |") in table
    assert "| selection (all 1 buckets and the rest of the grid at once) | 0 | 0.5 for the whole grid |" in table
    assert "| evolution | 50 | 85 |" in table and "| random | 50 | 84 |" in table


# -- each benchmark end to end at its smallest settings ----------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def uniform(tmp_path_factory) -> Path:
    """A `ladder` supernet trained uniformly for a few steps, holding out 200 images under seed 3."""
    run = tmp_path_factory.mktemp("uniform")
    done = subprocess.run([sys.executable, "-m", "training", "train", "--out", str(run), "--space", "ladder",
                           "--sampler", "uniform", "--sandwich", "1", "--epochs", "0.003", "--batch-size", "64",
                           "--warmup-epochs", "0.001", "--val-size", "200", "--seed", "3", "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def bossnas_raw(tmp_path_factory, data) -> Path:
    """Two BossNAS runs on the tiny space, a stratified ground truth with two re-runs, one pick against two random
    paths: every path trained one step and scored on 64 test images."""
    from bench.bench_bossnas import ground_truth_jobs, main, train_all

    work = tmp_path_factory.mktemp("bossnas")
    with torch_threads(1):
        runs = []
        for seed in (0, 1):
            cfg = BossConfig(TINY, epochs_per_block=1, nas_train=256, nas_val=64, batch_size=64, calibration=64,
                             seed=seed, buckets=Buckets(500, 8000, ratio=2), progress=False)
            boss_search(cfg, work / f"s{seed}")
            runs.append(f"EB s{seed}={work / f's{seed}'}")
        train_all(TINY, ground_truth_jobs(TINY, 1, 0, noise_archs=2, noise_seeds=2), work / "gt", 0.001,
                  test_images=64)
        main(["picks", "--preferred", str(work / "s0" / "preferred.json"), "--out", str(work / "picks"),
              "--buckets", "0", "--random", "2", "--epochs", "0.001", "--test-images", "64", "--threads", "1"])
        raw = data / "bossnas" / "tiny.json"
        main(["report", "--gt", str(work / "gt"), "--runs", *runs, "--picks", str(work / "picks"), "--raw", str(raw)])
    return raw


def test_bossnas_report_keeps_every_path_seed_run_and_pick(bossnas_raw, tmp_path):
    from bench.bench_bossnas import main

    raw = json.loads(bossnas_raw.read_text())
    gt = raw["ground_truth"]
    assert len(gt) == 11 and sorted(r["seed"] for r in gt).count(1) == 2  # 9 strata + 2 re-runs
    assert all(r["test_images"] == 64 and r["arch"] and "top1" in r for r in gt)
    assert set(raw["runs"]) == {"EB s0", "EB s1"} and raw["pairs"] == [["EB s0", "EB s1"]]
    for run in raw["runs"].values():  # the run as rated: every block's loss table, every block path in it
        assert [set(b["losses"]) for b in run["blocks"]] == [{"0"}, {"0", "1", "2"}]
        assert all(len(t) == len(block_paths(TINY, int(s))) for b in run["blocks"] for s, t in b["losses"].items())
    assert [r["label"] for r in raw["picks"]] == ["pick0", "random0"]  # one path of the tiny space lies within 10%
    assert bossnas_raw.stat().st_size < 300_000
    main(["report", "--from", str(bossnas_raw), "--plot", str(tmp_path / "rating.png")])
    assert (tmp_path / "rating.png").stat().st_size > 0


def test_bossnas_report_gathered_in_parts_equals_one_report(bossnas_raw, tmp_path):
    """A study longer than one session: one run and the ground truth first, then `--onto` that file the second run,
    the pairs and the picks, give the one-report raw file exactly."""
    from bench.bench_bossnas import main

    whole = json.loads(bossnas_raw.read_text())
    s0, s1 = (whole["runs"][name]["source"] for name in ("EB s0", "EB s1"))
    work, part = Path(s0).parent, tmp_path / "part.json"
    main(["report", "--gt", str(work / "gt"), "--runs", f"EB s0={s0}", "--raw", str(part)])
    first = json.loads(part.read_text())
    assert list(first["runs"]) == ["EB s0"] and first["pairs"] == [] and first["picks"] == []
    main(["report", "--onto", str(part), "--runs", f"EB s1={s1}", "--pairs", "EB s0 vs EB s1", "--picks",
          str(work / "picks")])
    assert json.loads(part.read_text()) == whole
    (tmp_path / "other.json").write_text('{"kind": "prezoo.zoo"}')
    for onto, says in ((tmp_path / "other.json", "not a bench_bossnas raw file"), (tmp_path / "none.json", "No such")):
        with pytest.raises(SystemExit, match=says):
            main(["report", "--onto", str(onto), "--runs", f"EB s1={s1}"])
    with pytest.raises(SystemExit, match="NAME=RUN_DIR"):
        main(["report", "--onto", str(part), "--runs", s1])


def test_bossnas_report_rates_the_ground_truth_by_the_other_selectors_too(bossnas_raw, tmp_path):
    """`--zero-cost` and `--darts` add one score per ground-truth path: SNIP as `training.zero_cost` gives it, and the
    log-probability under a DARTS search's last logits; a later `--onto` keeps them."""
    from bench.bench_bossnas import main
    from training.config import ZeroCostConfig
    from training.darts import DartsConfig, darts
    from training.zero_cost import scorer

    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps({"family": "hytra", **TINY.to_dict()}))
    with torch_threads(1):
        darts(DartsConfig(space=str(space_file), data="synthetic:256", buckets=Buckets(500, 8000, ratio=4),
                          nas_train=128, nas_val=128, batch_size=32, warmup_steps=2, steps=4, eval_every=2,
                          eval_images=32), tmp_path / "darts", progress=False)
        part = tmp_path / "raw.json"
        shutil.copy(bossnas_raw, part)
        main(["report", "--onto", str(part), "--zero-cost", "synthetic:256", "--darts", str(tmp_path / "darts")])
    raw = json.loads(part.read_text())
    archs = {r["id"]: HyTraArch.from_dict(r["arch"]) for r in raw["ground_truth"] if r["seed"] == 0}
    assert list(raw["ratings"]) == ["snip", "snip (labels)", "DARTS α"]
    assert all(set(r["scores"]) == set(archs) for r in raw["ratings"].values())
    first, snip = next(iter(archs.items())), scorer(ZeroCostConfig(TINY, progress=False))
    assert raw["ratings"]["snip"]["scores"][first[0]] == snip(first[1])
    assert all(v < 0 for v in raw["ratings"]["DARTS α"]["scores"].values())  # log-probabilities
    table = bossnas(raw)
    assert all(sum(line.startswith(f"| {name} | ") for line in table.splitlines()) == 1 for name in raw["ratings"])
    run = raw["ratings"]["DARTS α"]["run"]  # what the search did, per bucket
    assert [s["step"] for s in run["searches"]] == [4] * len(run["searches"]) and run["picks"]
    first_bucket = f"[{run['searches'][0]['low'] / 1e3:.0f}K,"
    assert f"{run['archs_scored']} archs scored" in table and rows_of(table, first_bucket)
    main(["report", "--onto", str(part), "--pairs", "EB s1 vs EB s0"])
    assert json.loads(part.read_text())["ratings"] == raw["ratings"]
    for flag, value, says in (("--darts", str(tmp_path), "logits.json"), ("--zero-cost", "nowhere:x", "nowhere")):
        with pytest.raises(SystemExit, match=says):
            main(["report", "--onto", str(part), flag, value])


def test_bossnas_report_rates_the_ground_truth_by_a_uniform_supernet_and_enas_s_policy(bossnas_raw, uniform, tmp_path):
    """`--one-shot RUN` scores each ground-truth path by its held-out top-1 through a uniformly trained HyTra supernet
    (ENAS's reward), `--enas` by its log-probability under an ENAS search's last policy; `--tag` adds a replicate
    beside them; a supernet of another space is refused."""
    from bench.bench_bossnas import main
    from training.config import TrainConfig
    from training.evaluate import load_supernet
    from training.pick import validation_fitness
    from training.search import log_probability

    space_file, run, search = tmp_path / "tiny.json", tmp_path / "uniform", tmp_path / "enas"
    space_file.write_text(json.dumps({"family": "hytra", **TINY.to_dict()}))
    for args in (["train", "--out", run, "--space", space_file, "--sampler", "uniform", "--epochs", "0.003",
                  "--batch-size", "64", "--warmup-epochs", "0.001", "--val-size", "100", "--no-progress"],
                 ["search", "--run", run, "--algorithm", "enas", "--evaluations", "3", "--max-params", "1M",
                  "--val-images", "50", "--out", search]):
        done = subprocess.run([sys.executable, "-m", "training", *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=600, env=ONE_THREAD)
        assert done.returncode == 0, done.stderr
    part = tmp_path / "raw.json"
    shutil.copy(bossnas_raw, part)
    with torch_threads(1):
        main(["report", "--onto", str(part), "--one-shot", str(run), "--enas", str(search / "search.json")])
        raw = json.loads(part.read_text())
        archs = {r["id"]: HyTraArch.from_dict(r["arch"]) for r in raw["ground_truth"] if r["seed"] == 0}
        assert list(raw["ratings"]) == ["one-shot (ENAS's reward)", "ENAS policy"]
        assert all(set(r["scores"]) == set(archs) for r in raw["ratings"].values())
        fitness, _ = validation_fitness(TrainConfig.load(run / "config.json"),
                                        load_supernet(run / "supernet.safetensors"), 0)
        some = sorted(archs)[:3]
        assert [raw["ratings"]["one-shot (ENAS's reward)"]["scores"][i] for i in some] == [fitness(archs[i])
                                                                                           for i in some]
    policy = json.loads((search / "search.json").read_text())["policy"]
    assert all(raw["ratings"]["ENAS policy"]["scores"][i] == pytest.approx(log_probability(TINY, a, policy))
               for i, a in archs.items())
    table = bossnas(raw)
    assert all(sum(line.startswith(f"| {name} | ") for line in table.splitlines()) == 1 for name in raw["ratings"])
    main(["report", "--onto", str(part), "--enas", str(search / "search.json"), "--tag", "s1"])  # a replicate joins
    tagged = json.loads(part.read_text())["ratings"]
    assert list(tagged) == [*raw["ratings"], "ENAS policy s1"] and tagged["ENAS policy s1"] == tagged["ENAS policy"]
    with pytest.raises(SystemExit, match="supernet is of ladder"):
        main(["report", "--onto", str(part), "--one-shot", str(uniform)])


def test_bossnas_report_refuses_paths_of_another_space(bossnas_raw):
    from bench.bench_bossnas import SPACE, raw_doc, stratified_archs

    raw = json.loads(bossnas_raw.read_text())
    label, arch = stratified_archs(SPACE, 1, 0)[0]
    foreign = [{**raw["ground_truth"][0], "arch": arch.to_dict()}]
    with pytest.raises(ValueError, match="space 'tiny' has 4 layers"):
        raw_doc(TINY, foreign, raw["runs"], [], [])
    with pytest.raises(ValueError, match="is not of space micro-hytra"):
        raw_doc(SPACE, [], raw["runs"], [], [])


@pytest.fixture(scope="module")
def selector_raw(uniform, data) -> Path:
    from bench.bench_selector_accuracy import main

    raw = data / "selector-accuracy" / "ladder-buckets.json"
    with torch_threads(1):
        main(["--supernet", str(uniform / "supernet.safetensors"), "--seeds", "2", "--random", "2", "--raw", str(raw),
              "--plot", str(uniform / "selector.png")])
    return raw


def test_selector_accuracy_scores_on_the_split_its_supernet_held_out(selector_raw):
    raw = json.loads(selector_raw.read_text())
    assert raw["validation"] == {"source": "fashion-mnist", "seed": 3, "images": 200}  # the run's seed, not 0
    assert raw["study"] == "buckets" and raw["seeds"] == 2 and len(raw["groups"]) >= 10
    for g in raw["groups"]:
        assert len(g["random"]) == 2 and all(len(p) == 2 for p in g["picks"].values())
        for a in g["random"] + [x for p in g["picks"].values() for x in p if x]:
            assert g["bucket"][0] <= raw["archs"][a]["params"] < g["bucket"][1]
            assert 0 <= raw["archs"][a]["val_top1"] <= 100


@pytest.fixture(scope="module")
def search_raw(uniform, data) -> Path:
    from bench.bench_search import main

    raw = data / "search" / "ladder.json"
    with torch_threads(1):
        main(["--uniform", str(uniform / "supernet.safetensors"), "--zoo", str(ROOT / "zoos" / "ladder-fmnist"),
              "--buckets", "2", "--evaluations", "3", "--population", "2", "--seeds", "1", "--raw", str(raw),
              "--plot", str(uniform / "search.png")])
    return raw


def test_search_records_each_search_and_the_archs_it_reports(search_raw):
    from training.search import SEARCHES

    raw = json.loads(search_raw.read_text())
    assert raw["validation"] == {"source": "fashion-mnist", "seed": 3, "images": 200} and raw["test_images"] == 10_000
    (bucket,) = raw["buckets"]
    assert [r["algorithm"] for r in bucket["searches"]] == list(SEARCHES)
    for r in bucket["searches"] + [{"best": bucket["selection"]["arch"]}]:
        arch = raw["archs"][r["best"]]
        assert bucket["bucket"][0] <= arch["params"] < bucket["bucket"][1]
        assert {"val_top1", "test_top1"} <= arch.keys()
    assert all(r["evaluations"] == 3 and r["seconds"] > 0 for r in bucket["searches"])


def test_benchmarks_refuse_a_supernet_without_its_training_record(uniform, tmp_path):
    """No config.json beside the weights: which images the supernet trained on is unknown, so no split is chosen."""
    from bench.bench_search import main as search_main
    from bench.bench_selector_accuracy import main as selector_main

    shutil.copy(uniform / "supernet.safetensors", tmp_path / "supernet.safetensors")
    for run in (lambda s: selector_main(["--supernet", s, "--raw", str(tmp_path / "x.json")]),
                lambda s: search_main(["--uniform", s, "--zoo", str(ROOT / "zoos" / "ladder-fmnist"),
                                       "--raw", str(tmp_path / "y.json")])):
        with pytest.raises(SystemExit, match="no validation split is held out for sure"):
            run(str(tmp_path / "supernet.safetensors"))
    assert not list(tmp_path.glob("*.json"))


def test_bench_report_renders_the_three_raw_files_and_check_accepts_them(bossnas_raw, selector_raw, search_raw,
                                                                         data, tmp_path):
    keys = [f"{p.parent.name}/{p.stem}" for p in (bossnas_raw, selector_raw, search_raw)]
    results = tmp_path / "RESULTS.md"
    results.write_text("".join(f"## {k}\n\n<!-- report:{k} -->\n<!-- /report:{k} -->\n\n" for k in keys))
    assert bench_report(results, data, "--check").returncode == 1  # empty blocks differ from their data
    done = bench_report(results, data)
    assert done.returncode == 0 and "rebuilt 3 of 3" in done.stdout, done.stderr
    text = results.read_text()
    assert "| EB s0 vs EB s1 | " in text and "| params alone (no search at all) |" in text
    assert "| snip-normalised | " in text and "| enas | 3 |" in text
    assert bench_report(results, data, "--check").returncode == 0
