"""The GPU benchmarks run on CPU too (`--device cpu`), so they cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(module: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", f"bench.{module}", "--device", "cpu", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_inference_benchmark_compares_engines_and_their_outputs(tmp_path):
    text = bench("bench_gpu", "--models", "1", "--batches", "2", "--rounds", "1", "--reps", "1", "--out", str(tmp_path))
    rows = {r["engine"]: r for r in json.loads((tmp_path / "bench_gpu.json").read_text())["rows"]}
    assert set(rows) == {"torch eager fp32", "torch bf16", "ORT CPU fp32"}
    assert rows["torch eager fp32"]["speedup"] == 1 and rows["torch eager fp32"]["max_abs_diff"] == 0
    assert rows["ORT CPU fp32"]["max_abs_diff"] < 1e-3 and rows["ORT CPU fp32"]["img_per_s"] > 0
    assert all(f"| {name}" in text for name in rows)


def test_training_benchmark_puts_the_supernet_beside_timm():
    text = bench("bench_train_gpu", "--space", "autoformer-tiny", "--batch", "2", "--rounds", "1", "--reps", "1")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "img/s" not in line]
    names = [line.split("|")[1].strip() for line in rows]
    assert names == ["timm VisionTransformer (largest)", "supernet @ largest", "supernet, 6 preferred archs"]
    assert rows[0].rstrip().endswith("1.00x |") and all(float(line.split("|")[2]) > 0 for line in rows)


@pytest.mark.slow
def test_step_speed_benchmark_times_the_three_variants_of_one_step(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.bench_step_speed", "--space", "mbconv-tiny", "--threads", "1",
                          "--batch", "8", "--rounds", "2", "--reps", "1", "--out", str(tmp_path / "raw.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert set(raw["seconds_per_step"]) == {"eager fp32", "bf16 autocast", "torch.compile"}
    assert all(len(t) == 2 and min(t) > 0 for t in raw["seconds_per_step"].values())
    assert "| eager fp32 |" in out.stdout and out.stdout.count("x |") == 3


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py")))
def test_every_benchmark_imports(module):
    """Benchmarks run rarely (some only on a GPU): at least their imports follow the code they measure."""
    importlib.import_module(f"bench.{module}")


def test_paired_statistics_of_the_tradeoff_benchmark():
    """McNemar's exact test and the paired interval, against values worked out by hand."""
    import numpy as np

    from bench.bench_selector_accuracy import best_rank
    from bench.report import mcnemar_p, paired_difference

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)  # all six disagreements one way: 2 · 0.5^6
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)  # P(X <= 1), X ~ Bin(10, 1/2), two-sided
    big = np.array([True] * 90 + [False] * 10)
    small = np.array([True] * 80 + [False] * 20)  # the big model is right on 10 more images, never fewer
    diff, lo, hi, p = paired_difference(big, small)
    assert diff == pytest.approx(10.0) and lo < 10 < hi and p == pytest.approx(2 / 2**10)
    assert paired_difference(small, small)[:3] == (0.0, 0.0, 0.0)
    assert best_rank(0.9, [0.1, 0.5]) == 0 and best_rank(0.1, [0.5, 0.9]) == 1 and best_rank(0.5, [0.5, 0.1]) == 0.25


def test_isomer_helpers_of_the_selector_accuracy_benchmark():
    """An isomer group holds every layout of the same totals (so the same params); random isomers are distinct."""
    from bench.bench_selector_accuracy import isomers, low_share, random_isomers, totals_key
    from zoo import Arch, get_space, params

    space = get_space("isomer")
    arch = Arch(64, 6, (3, 3, 2, 2, 1, 1), (3.0, 2.0, 1.0, 1.0, 2.0, 3.0))
    group = isomers(space, arch)
    assert arch in group and len(group) == len(set(group)) == 141 * 141  # layouts of 6 choices of 1..3 summing to 12
    assert {params(space, a) for a in group} == {params(space, arch)}
    assert all(space.validate(a) for a in group[:50]) and {totals_key(a) for a in group} == {totals_key(arch)}
    randoms = random_isomers(space, arch, 30, seed=0)
    assert len(set(randoms)) == 30 and arch not in randoms and set(randoms) <= set(group)
    assert random_isomers(space, arch, 30, seed=0) == randoms  # seeded
    thin = Arch(64, 6, (1,) * 6, (1.0,) * 5 + (2.0,))
    assert len(random_isomers(space, thin, 30, seed=0)) == 5  # the ratio 2 sits in one of 6 layers: 5 others
    assert low_share(space, Arch(64, 6, (3, 3, 3, 1, 1, 1), (3.0, 3.0, 3.0, 1.0, 1.0, 1.0))) == 1  # all added low
    assert low_share(space, Arch(64, 6, (1, 2, 1, 1, 2, 1), (1.0,) * 6)) == 0.5  # ratios add nothing: heads only
    assert low_share(space, Arch(64, 6, (1,) * 6, (1.0,) * 6)) is None


def test_search_benchmark_charges_each_arch_once():
    """The shared memo evaluates an arch once and charges every search that visits it the same seconds."""
    import torch

    from bench.bench_search import TimedFitness
    from zoo import ViTSupernet, get_space

    space = get_space("ladder")
    torch.manual_seed(0)
    fitness = TimedFitness(ViTSupernet(space).eval(), [(torch.randn(8, 1, 28, 28), torch.arange(8))])
    small, large = space.smallest_arch(), space.largest_arch()
    assert fitness(small) == fitness(small) and len(fitness.scores) == 1
    fitness(large)
    assert fitness.seconds([small, large]) == fitness.scores[small][1] + fitness.scores[large][1] > 0


def test_seed_interval_is_the_t_interval_of_the_mean():
    """Seeds are the replicates: with 3 of them the 95% half-width is t(0.975, 2) · s / √3, worked out by hand."""
    from bench.common import mean_interval, t_half

    assert t_half([1.0, 2.0, 3.0]) == pytest.approx(4.3027 * 1.0 / 3**0.5)
    assert t_half([5.0, 5.0]) == 0 and mean_interval([2.0]) == "2.000"
    assert mean_interval([0.1, 0.3]) == "0.200 ± 1.271"  # s = 0.1·√2, so 12.71 · s / √2 = 1.271


@pytest.mark.parametrize("dof, quantile", [(3, 3.182), (4, 2.776), (6, 2.447), (9, 2.262), (11, 2.201), (20, 2.086),
                                           (30, 2.042), (120, 1.980)])
def test_t_quantile_beyond_ten_samples_is_not_the_normal_one(dof, quantile):
    """Printed t-table values (two-sided 95%): more than 10 seeds no longer fall back to 1.96."""
    from bench.common import t95

    assert t95(dof) == pytest.approx(quantile, abs=1e-3)


def test_rank_correlations_of_the_bossnas_benchmark():
    from bench.common import correlations, kendall, ranks, spearman

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 40).astype(float), rng.normal(size=40)  # x has ties
    concordant = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(40) for j in range(i))
    pairs_x = sum(x[i] != x[j] for i in range(40) for j in range(i))
    assert kendall(x, y) == pytest.approx(concordant / np.sqrt(pairs_x * 40 * 39 / 2))  # tau-b, by pair counting
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]  # ties share their mean rank
    assert spearman(x, np.exp(y)) == pytest.approx(spearman(x, y))  # ranks only
    c = correlations(y, 2 * y + 1)
    assert c["tau"] == pytest.approx(1) and c["rho"] == pytest.approx(1) and c["R"] == pytest.approx(1)
    assert kendall(y, -y) == pytest.approx(-1)


def test_bossnas_ground_truth_spans_size_and_mix_and_picks_match_params():
    from bench.bench_bossnas import HAND_PICKED, SPACE, att_count, equal_params_archs, noise_ceiling, stratified_archs
    from zoo.families.hytra import params

    chosen = stratified_archs(SPACE, 2, seed=0)
    labels = [label for label, _ in chosen]
    assert {f"p{s}-a{m}" for s in range(3) for m in range(3)} <= set(labels)
    assert labels[-len(HAND_PICKED):] == list(HAND_PICKED)
    assert {att_count(a) for label, a in chosen if label.endswith("a0")} == {0}
    assert min(att_count(a) for label, a in chosen if label.endswith("a2")) >= 4
    pick = chosen[0][1]
    near = equal_params_archs(SPACE, pick, 5, 0.1, seed=0)
    assert len(near) == 5 and pick not in near
    assert all(abs(params(SPACE, a) - params(SPACE, pick)) <= 0.1 * params(SPACE, pick) for a in near)
    rows = [{"id": i, "top1": t} for i, ts in (("a", [80.0, 81.0, 82.0]), ("b", [70.0, 70.0, 73.0])) for t in ts]
    truth = {f"x{k}": float(k) for k in range(20)}
    tight, loose = noise_ceiling(rows[:3], truth), noise_ceiling(rows, truth)
    assert tight["seed_sd_pp"] == pytest.approx(1.0)
    assert loose["seed_sd_pp"] == pytest.approx(np.sqrt((2 + 6) / 4))  # pooled: squared deviations / dof
    assert 0 < loose["tau"] < tight["tau"] < 1  # more seed noise, less agreement between re-runs
    assert loose["tau"] < loose["perfect"]["tau"] < tight["perfect"]["tau"] < 1  # one noisy side beats two


def test_benchmarks_validate_on_the_split_their_supernet_held_out(tmp_path):
    """The validation split comes from the supernet's own run (data, val_size, seed), never a fixed seed 0; without
    the run's config.json the benchmark refuses rather than guess."""
    import json
    from dataclasses import asdict

    from bench.common import supernet_validation_split
    from training.config import TrainConfig
    from training.data import load_data
    from zoo.families.vit.space import get_space

    space = get_space("mini")
    run = TrainConfig(space="mini", sampler="uniform", data="synthetic:64", val_size=16, seed=3)
    (tmp_path / "config.json").write_text(json.dumps(asdict(run)))
    held, cfg = supernet_validation_split(tmp_path / "supernet.safetensors", space)
    assert cfg.seed == 3
    same, _ = load_data("synthetic:64", "val", val_size=16, seed=3, img_size=space.img_size, in_chans=space.in_chans)
    other, _ = load_data("synthetic:64", "val", val_size=16, seed=0, img_size=space.img_size, in_chans=space.in_chans)
    assert held.indices == same.indices != other.indices
    with pytest.raises(SystemExit, match="no validation split is held out for sure"):
        supernet_validation_split(tmp_path / "elsewhere" / "supernet.safetensors", space)
