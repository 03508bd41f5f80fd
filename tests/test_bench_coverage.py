"""bench_coverage: each module's share of the training steps under uniform and sandwiched sampling, counted over
Micro-HyTra's real paths, and a briefly trained supernet's paths scored (real Fashion-MNIST) and tabulated by their
rarest module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.bench_coverage import main, modules_of, step_shares, tables
from training.config import TrainConfig
from training.sampler import OptionBalancedSampler
from zoo.families.hytra import MICRO_HYTRA, HyTraArch, HyTraSupernet, all_archs, extreme_archs

ROOT = Path(__file__).resolve().parent.parent
ALL_S0 = HyTraArch(((0, "conv"),) * MICRO_HYTRA.num_layers)


@pytest.fixture(scope="module")
def supernet() -> HyTraSupernet:
    return HyTraSupernet(MICRO_HYTRA)


def config(sandwich: int, sampler: str = "uniform") -> TrainConfig:
    return TrainConfig(out="run", space="micro-hytra", sampler=sampler, sandwich=sandwich,
                       preferred="p.json" if sampler.startswith("preferred") else None)


def test_uniform_shares_count_the_paths_that_run_each_module(supernet):
    shares = step_shares(supernet, config(-1), 100)
    paths = all_archs(MICRO_HYTRA)
    assert shares["stem"] == 1.0
    assert shares["heads.s0"] == 1 / len(paths)  # only the all-S0 path ends at S0
    path_modules = modules_of(supernet)
    for name in ("heads.s1", "projections.l7_s1_att_halve"):
        assert shares[name] == sum(name in path_modules(a) for a in paths) / len(paths)
    assert set(shares) == {n for n, m in supernet.named_modules() if n.count(".") == 1 and not n.startswith("stem")
                           and any(True for _ in m.parameters())} | {"stem"}


def test_sandwich_trains_the_extremes_every_step_and_the_rest_as_often_as_its_draws(supernet):
    uniform, sandwich = step_shares(supernet, config(-1), 100), step_shares(supernet, config(1), 100)
    smallest, largest = extreme_archs(MICRO_HYTRA)
    assert smallest == ALL_S0
    path_modules = modules_of(supernet)
    always = path_modules(smallest) | path_modules(largest)
    assert all(sandwich[m] == 1.0 for m in always)
    assert all(sandwich[m] == pytest.approx(uniform[m]) for m in set(uniform) - always)
    assert step_shares(supernet, config(2), 100)["heads.s1"] == pytest.approx(1 - (1 - uniform["heads.s1"]) ** 2)


def test_preferred_runs_are_refused(supernet):
    with pytest.raises(SystemExit, match="whole space only"):
        step_shares(supernet, config(-1, sampler="preferred"), 100)


def test_option_balanced_shares_are_counted_over_the_runs_replayed_steps(supernet):
    steps = 300
    shares = step_shares(supernet, config(-1, sampler="option-balanced"), steps)
    sample, path_modules = OptionBalancedSampler(MICRO_HYTRA, seed=0), modules_of(supernet)
    drawn = [path_modules(sample(s)) for s in range(steps)]
    assert set(shares) == set(step_shares(supernet, config(-1), steps))
    for name in ("stem", "heads.s0", "heads.s1", "projections.l7_s1_att_halve"):
        assert shares[name] == sum(name in modules for modules in drawn) / steps
    assert shares["stem"] == 1.0 and shares["heads.s0"] > 10 / len(all_archs(MICRO_HYTRA))


@pytest.mark.slow
def test_a_trained_supernets_paths_are_scored_and_grouped(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "training", "train", "--out", str(run), "--space", "micro-hytra",
                           "--sampler", "uniform", "--epochs", "0.01", "--batch-size", "128", "--warmup-epochs", "0",
                           "--log-every", "1", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    threads = torch.get_num_threads()
    try:
        assert main(["--runs", str(run), "--max-params", "40000", "--random", "2", "--val-images", "64",
                     "--out", str(tmp_path / "coverage.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    raw = json.loads((tmp_path / "coverage.json").read_text())
    assert [p["layers"] for p in raw["paths"][:1]] == [ALL_S0.describe()]  # the one path under 40K params
    assert len(raw["paths"]) == 3 and raw["runs"][0]["steps"] == 4  # 1% of 429 steps an epoch
    assert raw["runs"][0]["rarest_share"][0] == 1 / len(all_archs(MICRO_HYTRA))
    assert all(0 <= s <= 100 for s in raw["runs"][0]["score"])
    text = tables(raw)
    assert "\n| < 10 | 3 | 39K–" in text  # 4 steps: no module can run in 10
    assert "\n| run | 4 | uniform |" in text
    # --add: the same run scored again on the paths the file holds, added beside the first
    try:
        assert main(["--runs", str(run), "--val-images", "64", "--add", "--out", str(tmp_path / "coverage.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    added = json.loads((tmp_path / "coverage.json").read_text())
    assert added["paths"] == raw["paths"] and added["runs"][0] == raw["runs"][0] and len(added["runs"]) == 2
    assert added["runs"][1]["rarest_share"] == raw["runs"][0]["rarest_share"] and "--add" in added["command"]
