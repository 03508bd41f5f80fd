"""bench_rating: every rating's score for every ground-truth arch is what that rating says (params, MACs, the
supernet's one-shot top-1 with BatchNorm recalibrated, SNIP at initialisation), a ground truth of another dataset
is refused while one of another split is rated (a second seed's supernet), and the report's tables correlate the
scores with the ground truth."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.bench_baselines import SCHEDULE
from bench.bench_rating import rate
from bench.common import kendall
from bench.report import rating
from training.config import TrainConfig
from training.darts import decisions
from training.evaluate import load_supernet
from training.pick import validation_fitness
from training.select import gaussian_batch, input_batch
from training.zero_cost import snip_at_init
from zoo.family import space_by_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A briefly trained uniform mbconv-tiny supernet (real Fashion-MNIST, held-out split of seed 0)."""
    out = tmp_path_factory.mktemp("rating") / "run"
    done = subprocess.run([sys.executable, "-m", "training", "train", "--out", str(out), "--space", "mbconv-tiny",
                           "--sampler", "uniform", "--sandwich", "1", "--epochs", "0.02", "--batch-size", "64",
                           "--warmup-epochs", "0.005", "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def darts_run(tmp_path_factory) -> Path:
    """A short DARTS search of mbconv-tiny over two buckets covering the space (synthetic images: only its logits
    are read)."""
    out = tmp_path_factory.mktemp("rating") / "darts"
    done = subprocess.run([sys.executable, "-m", "training", "darts", "--space", "mbconv-tiny", "--data",
                           "synthetic:384", "--nas-train", "192", "--nas-val", "192", "--batch-size", "32",
                           "--warmup-steps", "5", "--steps", "20", "--eval-every", "10", "--eval-images", "64",
                           "--arch-lr", "0.05", "--low", "1800", "--width", "15300", "--high", "32400", "--out",
                           str(out), "--threads", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def ground_truth(split_seed: int = 0, data: str = "fashion-mnist") -> dict:
    """Three random mbconv-tiny archs as bench_ground_truth records them, with made-up accuracies (the rater reads
    only the archs and the split; the accuracies are what the table correlates with)."""
    family, space = space_by_name("mbconv-tiny")
    rng = random.Random(1)
    archs = list({a.id: a for a in (family.random_arch(space, rng) for _ in range(20))}.values())[:3]
    models = [{"arch": {"space": "mbconv-tiny", "arch": a.to_dict()}, "data": data, "val_size": 5000,
               "split_seed": split_seed, "epochs": 1, "lr": 0.01, "schedule": SCHEDULE, "test_images": 10000,
               "params": family.params(space, a), "test_top1": 80.0 + k, "val_top1": 79.0 + k}
              for k, a in enumerate(archs)]
    return {"space": space.to_dict(), "models": models}


def test_each_rating_scores_each_arch_as_it_says(run):
    gt = ground_truth()
    doc = rate(gt, run, val_images=300)
    family, space = space_by_name("mbconv-tiny")
    archs = [family.arch_from_dict(m["arch"]["arch"]) for m in gt["models"]]
    fitness, _ = validation_fitness(TrainConfig.load(run / "config.json"), load_supernet(run / "supernet.safetensors"),
                                    300)
    scores = [a["scores"] for a in doc["archs"]]
    assert [s["params"] for s in scores] == [family.params(space, a) for a in archs]
    assert [s["MACs"] for s in scores] == [family.flops(space, a) for a in archs]
    assert [s["one-shot"] for s in scores] == pytest.approx([fitness(a) for a in archs], abs=1e-9)
    assert all(s["snip"] > 0 for s in scores) and len({s["snip"] for s in scores}) == 3
    selectors_batch = gaussian_batch(space, 64, torch.Generator().manual_seed(0)), None  # the selector's defaults
    assert [s["snip"] for s in scores] == pytest.approx([snip_at_init(space, a, selectors_batch, 0) for a in archs],
                                                         rel=1e-6)
    labelled = input_batch(space, "fashion-mnist", 64, 0)
    assert labelled[1] is not None and [s["snip (labels)"] for s in scores] == pytest.approx(
        [snip_at_init(space, a, labelled, 0) for a in archs], rel=1e-6)
    assert rate(gt, run, val_images=300)["archs"][0]["scores"]["snip"] == scores[0]["snip"]  # seeded init, one batch
    assert set(doc["seconds"]) == {"params", "MACs", "one-shot", "snip", "snip (labels)"}

    table = rating(doc)
    params_row = next(line for line in table.splitlines() if line.startswith("| params |"))
    truth = [m["test_top1"] for m in gt["models"]]
    assert params_row.startswith(f"| params | {kendall([s['params'] for s in scores], truth):+.2f} [")
    assert "3 archs trained from scratch (1 epochs" in table


def test_a_ground_truth_of_another_dataset_is_refused(run):
    with pytest.raises(SystemExit, match="trained on 'mnist', the supernet on 'fashion-mnist'"):
        rate(ground_truth(data="mnist"), run, val_images=50)


def test_a_ground_truth_of_another_split_is_rated_and_both_splits_are_recorded(run):
    """A supernet of seed 0 rates a ground truth validated on seed 1's split: its one-shot scores read only its own
    held-out images, and neither side's test images."""
    doc = rate(ground_truth(split_seed=1), run, val_images=50)
    assert doc["ground_truth"]["split_seed"] == 1 and doc["supernet"]["run"]["seed"] == 0
    assert len(doc["archs"]) == 3 and all(0 <= a["scores"]["one-shot"] <= 100 for a in doc["archs"])


def test_darts_rates_each_arch_by_the_log_softmax_of_its_bucket_searchs_last_logits(run, darts_run):
    gt = ground_truth()
    doc = rate(gt, run, val_images=100, darts=darts_run)
    family, space = space_by_name("mbconv-tiny")
    names = decisions(space)
    searches = json.loads((darts_run / "logits.json").read_text())["searches"]
    for model, row in zip(gt["models"], doc["archs"], strict=True):
        arch = family.arch_from_dict(model["arch"]["arch"])
        search = next(s for s in searches if s["low"] <= row["params"] < s["high"])
        last = search["logits"][-1]["logits"]
        expected = sum(float(torch.tensor(last[n]).log_softmax(0)[names[n].index(v)])
                       for n, v in family.decisions_of(space, arch).items() if n in names)
        assert row["scores"]["DARTS α"] == pytest.approx(expected, abs=1e-5)
    assert "DARTS α" in doc["seconds"] and "| DARTS α |" in rating(doc)


def test_enas_rates_each_arch_by_its_buckets_last_policy(run, tmp_path):
    """Two ENAS searches of the tiny supernet, one per half of the space: each arch is scored by the policy of the
    search whose bucket holds it, the log of its decisions' probabilities."""
    family, space = space_by_name("mbconv-tiny")
    paths = []
    for k, (low, high) in enumerate([(1800, 17100), (17100, 32400)]):
        out = tmp_path / f"enas{k}"
        done = subprocess.run([sys.executable, "-m", "training", "search", "--run", str(run), "--algorithm", "enas",
                               "--evaluations", "4", "--min-params", str(low), "--max-params", str(high),
                               "--val-images", "50", "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        paths.append(out / "search.json")
    gt = ground_truth()
    doc = rate(gt, run, val_images=50, enas=paths)
    for model, row in zip(gt["models"], doc["archs"], strict=True):
        policy = json.loads(paths[0 if row["params"] < 17100 else 1].read_text())["policy"]
        arch = family.arch_from_dict(model["arch"]["arch"])
        expected = sum(math.log(policy[n][str(v)]) if n in policy else 0.0
                       for n, v in family.decisions_of(space, arch).items())
        asked = [n for n in family.decisions_of(space, arch) if n not in policy]
        assert not asked or row["scores"]["ENAS policy"] < expected  # unmet decisions count as uniform (< 0)
        if not asked:
            assert row["scores"]["ENAS policy"] == pytest.approx(expected, abs=1e-9)


@pytest.fixture(scope="module")
def bossnas_run(tmp_path_factory) -> Path:
    """A real BossNAS run of mbconv-tiny, a few steps per stage (synthetic images: only its nets and scores are
    read)."""
    out = tmp_path_factory.mktemp("rating") / "bossnas"
    done = subprocess.run([sys.executable, "-m", "training", "bossnas", "--space", "mbconv-tiny", "--data",
                           "synthetic:5400", "--nas-train", "256", "--nas-val", "64", "--batch-size", "64",
                           "--epochs-per-block", "1", "--centre-paths", "8", "--evaluations", "4", "--population",
                           "2", "--threads", "1", "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_bossnas_rates_each_arch_by_minus_the_sum_of_its_stage_losses(run, bossnas_run):
    """The run's preferred archs, whose stage paths its search rated, rated anew from its saved nets and centres: minus
    the sum of their stage losses in scores.json, each from the arch's input width, and their preferred.json score."""
    from training.bossnas_mbconv import stage_key

    family, space = space_by_name("mbconv-tiny")
    gt = ground_truth()
    picks = [e for b in json.loads((bossnas_run / "preferred.json").read_text())["buckets"] for e in b["entries"]][:3]
    gt["models"] += [{**gt["models"][0], "arch": {"space": "mbconv-tiny", "arch": e["arch"]}, "params": e["params"]}
                     for e in picks]
    doc = rate(gt, run, val_images=50, bossnas=bossnas_run)
    key = lambda k, width, stage: (k, width, json.dumps(stage, sort_keys=True))
    stored = {key(k, r["in"], r["stage"]): r["loss"] for k, s in enumerate(json.loads(
        (bossnas_run / "scores.json").read_text())["stages"]) for r in s["losses"]}
    for e, row in zip(picks, doc["archs"][3:], strict=True):
        arch = family.arch_from_dict(e["arch"])
        widths = (space.stem_channels, *(st.width for st in arch.stages[:-1]))
        expected = -sum(stored[key(k, w, stage_key(st))] for k, (w, st) in enumerate(zip(widths, arch.stages,
                                                                                         strict=True)))
        assert row["scores"]["BossNAS"] == pytest.approx(expected, abs=1e-6) == e["score"]
    assert all(-12 < a["scores"]["BossNAS"] < 0 for a in doc["archs"])  # 3 stages of 2 losses in [0, 4] each
    assert len({a["scores"]["BossNAS"] for a in doc["archs"]}) == len({a["id"] for a in doc["archs"]})
    assert "BossNAS" in doc["seconds"] and "| BossNAS |" in rating(doc)
    taus = doc["bossnas"]["centre_tau"]
    assert len(taus) == 3 and all(-1 <= t <= 1 for t in taus)
    assert "against a second, independently sampled one, by stage: " + ", ".join(f"{t:+.2f}" for t in taus) + "." \
        in rating(doc)
