"""bench/bench_latency.py: trained baselines and a shipped zoo's entries timed by real ONNX Runtime sessions in one
run, the raw file the versus table reads, and bad flags refused before any work."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bench.bench_baselines import main as train_baselines
from bench.bench_latency import BASELINES_RAW, main
from bench.report import latency, medians
from zoo.store import Zoo


@pytest.fixture(autouse=True)
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_baselines_and_zoo_entries_are_timed_side_by_side(tmp_path):
    runs = tmp_path / "runs"
    assert train_baselines(["--data", "synthetic:256", "--val-size", "64", "--log-every", "1000", "--families",
                            "cnn,vit", "--rungs", "0", "--epochs", "1", "--out", str(runs), "--raw-dir",
                            str(tmp_path / "raw")]) == 0
    shutil.copytree(runs / "cnn", runs / "tune" / "cnn")  # the lr sweep's models are no ladder: left out
    out = tmp_path / "latency.json"
    assert main(["--runs", str(runs), "--zoo", "mbconv-fmnist", "--threads", "1,2", "--rounds", "10", "--reps", "1",
                 "--warmup", "1", "--conditions", "a test", "--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    zoo = Zoo.load("mbconv-fmnist")
    baselines = [m for m in raw["models"] if m["kind"] == "baseline"]
    assert [(m["family"], m["seed"]) for m in baselines] == [("cnn", 0), ("vit", 0)]
    assert all(m["onnx_max_abs_diff"] < 1e-4 for m in baselines)
    assert [(m["id"], m["params"]) for m in raw["models"] if m["kind"] == "zoo"] == \
        [(e.id, e.params) for e in zoo.entries]
    for m in raw["models"]:
        assert set(m["latency"]) == {"1", "2"}
        assert all(0 < t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] < 1000 for t in m["latency"].values()), m
    assert raw["conditions"] == "a test" and raw["protocol"]["threads"] == [1, 2] and raw["protocol"]["rounds"] == 10
    ms = medians(raw)
    assert ms[("baseline", "cnn", baselines[0]["rung"], 0)] == baselines[0]["latency"]["1"]["median_ms"]
    assert len([line for line in latency(raw).splitlines() if line.startswith("| ")]) == 1 + len(raw["models"])


def test_untrained_times_every_committed_baseline_from_its_rung(tmp_path):
    """A fresh clone has no checkpoints: the raw files' models are built with initial weights and timed."""
    out = tmp_path / "latency.json"
    assert main(["--untrained", "--zoo", "hytra-fmnist", "--threads", "1", "--rounds", "10", "--reps", "1",
                 "--warmup", "1", "--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    committed = sorted((m["family"], m["rung"], m["seed"], m["params"], m["macs"])
                       for p in BASELINES_RAW.glob("*.json") for m in json.loads(p.read_text())["models"])
    timed = [m for m in raw["models"] if m["kind"] == "baseline"]
    assert sorted((m["family"], m["rung"], m["seed"], m["params"], m["macs"]) for m in timed) == committed
    assert all(m["onnx_max_abs_diff"] < 1e-4 and m["latency"]["1"]["median_ms"] > 0 for m in timed)
    assert raw["baseline_weights"] == "initial (untrained)" and "--untrained" in raw["command"]


@pytest.mark.parametrize("flags", [["--threads", "1,1"], ["--threads", "0"], ["--threads", ""], ["--rounds", "5"],
                                   ["--reps", "nan"], ["--conditions", "x" * 501], ["--runs", "/nonexistent/runs"],
                                   ["--untrained", "--runs", "/tmp"]])
def test_bad_flags_are_refused_before_any_work(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*(["--runs", str(tmp_path)] if "--runs" not in flags else []), "--out", str(tmp_path / "latency.json"),
              *flags])
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "latency.json").exists()
