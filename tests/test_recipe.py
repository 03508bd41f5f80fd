"""The one-shot recipe's parts (training.train): in-place distillation's targets, and a run with every part on
(sandwich, distillation, random crops, random erasing, weight average) resuming after SIGKILL to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from training.config import TrainConfig
from training.train import Checkpoint, train_step
from zoo.family import space_by_name

ROOT = Path(__file__).resolve().parent.parent
FAMILY, TINY = space_by_name("mbconv-tiny")


def _step_loss(distill: bool) -> tuple[float, float]:
    """train_step's loss on a sandwich of (largest, smallest), and the loss it should be, computed beforehand on
    the same weights: the labels teach the largest; the largest's predictions or the labels teach the smallest."""
    torch.manual_seed(0)
    model = FAMILY.supernet(TINY, drop_path_rate=0.0).train()
    smallest, largest = FAMILY.extreme_archs(TINY)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    cfg = TrainConfig(space="mbconv-tiny", sampler="uniform", sandwich=0, distill=distill, progress=False)
    with torch.no_grad():
        big, small = model(x, largest), model(x, smallest)
        teacher_loss = F.cross_entropy(big, y, label_smoothing=cfg.label_smoothing)
        if distill:
            student_loss = -(F.softmax(big, -1) * F.log_softmax(small, -1)).sum(-1).mean()
        else:
            student_loss = F.cross_entropy(small, y, label_smoothing=cfg.label_smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    got = train_step(model, opt, x, y, [largest, smallest], cfg, None, torch.device("cpu"))
    return got, (teacher_loss.item() + student_loss.item()) / 2


@pytest.mark.parametrize("distill", [True, False])
def test_in_place_distillation_teaches_the_paths_with_the_largest_paths_predictions(distill):
    got, expected = _step_loss(distill)
    assert got == pytest.approx(expected, rel=1e-5)


def test_distillation_without_the_sandwich_is_refused():
    with pytest.raises(ValueError, match="needs the sandwich rule"):
        TrainConfig(space="mbconv-tiny", sampler="uniform", distill=True)
    run = subprocess.run([sys.executable, "-m", "training", "train", "--space", "mbconv-tiny", "--sampler", "uniform",
                          "--distill"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and "needs the sandwich rule" in run.stderr, run.stderr


def _recipe_args(out: Path) -> list[str]:
    return ["train", "--out", str(out), "--space", "mbconv-tiny", "--sampler", "uniform", "--sandwich", "1",
            "--distill", "--crop-padding", "2", "--random-erasing", "0.5", "--ema", "0.9", "--epochs", "0.015",
            "--batch-size", "32", "--ckpt-every", "3", "--log-every", "3", "--warmup-epochs", "0.002",
            "--no-progress"]


def _run(out: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "training", *_recipe_args(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr


def test_the_full_recipe_resumes_after_sigkill_to_the_same_average(tmp_path):
    """Random erasing draws from Python's `random` and the average is state of its own: a resume reproduces the
    uninterrupted run only if both are restored."""
    _run(tmp_path / "full")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "training", *_recipe_args(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = Checkpoint(killed)
    deadline = time.time() + 300
    while not ckpt.path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    total = int(0.015 * (55000 // 32))
    assert 0 < ckpt.header()["step"] < total, "the run must be killed mid-way for this test to mean anything"
    _run(killed)
    full, resumed = load_file(tmp_path / "full" / "supernet.safetensors"), load_file(killed / "supernet.safetensors")
    assert max((full[k] - resumed[k]).abs().max().item() for k in full) <= 1e-6
    state = Checkpoint(tmp_path / "full").load()
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    assert all(torch.equal(full[k], averaged[k]) for k in full), "the saved supernet is the weight average"
    assert any(not torch.equal(full[k], state["model"][k]) for k in full), "the average differs from the weights"


def test_bench_recipe_collect_writes_the_finished_supernets_and_trains_nothing(tmp_path):
    """`--collect` gathers result.json of the finished (condition, seed) runs only, in their order."""
    from bench.bench_recipe import main as recipe_main

    for name in ("all-s0", "all@paths2-s1"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        condition, seed = name.rsplit("-s", 1)
        (tmp_path / "runs" / name / "result.json").write_text(json.dumps(
            {"condition": condition, "seed": int(seed), "rows": [{"val_top1": 70.0}]}))
    (tmp_path / "runs" / "all-s1").mkdir()  # unfinished: no result.json
    raw = tmp_path / "raw.json"
    assert recipe_main(["--conditions", "all,all@paths2", "--seeds", "0,1", "--out", str(tmp_path / "runs"),
                        "--raw", str(raw), "--collect"]) == 0
    doc = json.loads(raw.read_text())
    assert [(r["condition"], r["seed"]) for r in doc["results"]] == [("all", 0), ("all@paths2", 1)]
    assert doc["knobs"]["paths2"] == {"sandwich": 2} and not (tmp_path / "runs" / "all-s1" / "config.json").exists()
