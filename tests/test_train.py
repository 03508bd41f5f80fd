"""Trainer: learning, exact resume after SIGKILL, DDP on 2 gloo processes, evaluate and search CLIs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.__main__ import main as training_main
from training.__main__ import parse_args
from training.checks import write_json
from training.sampler import PreferredSampler, UniformSampler
from training.select import SelectConfig, select, write_selection
from training.train import Checkpoint, TrainConfig, train
from zoo import BUILTIN_SPACES

MINI = BUILTIN_SPACES["mini"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def preferred(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("select")
    return str(write_selection(select(SelectConfig(MINI, batch_size=16, progress=False)), out))


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _train_args(out, preferred, steps_epochs="0.012", **extra) -> list[str]:
    args = ["train", "--out", str(out), "--space", "mini", "--preferred", preferred, "--epochs", steps_epochs,
            "--batch-size", "32", "--ckpt-every", "4", "--log-every", "2", "--no-progress", "--warmup-epochs", "0.001"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def test_preferred_sampler_balances_embed_depth_groups(preferred):
    from training.preferred import load_preferred
    from zoo import Arch

    _, entries = load_preferred(preferred)
    archs = [Arch.from_dict(e["arch"]) for e in entries]
    sampler = PreferredSampler(archs, seed=0)
    draws = [sampler(step) for step in range(6000)]
    assert draws[:50] == [PreferredSampler(archs, seed=0)(s) for s in range(50)]  # stateless, reproducible
    groups = {(a.embed_dim, a.depth) for a in archs}
    counts = {g: sum((a.embed_dim, a.depth) == g for a in draws) for g in groups}
    for g, n in counts.items():
        assert abs(n / len(draws) - 1 / len(groups)) < 0.03, (g, n)
    assert set(draws) == set(archs)
    uniform = UniformSampler(MINI, seed=1)
    assert all(MINI.validate(uniform(s)) for s in range(100))


def test_plain_preferred_sampler_is_uniform_over_archs(preferred):
    """The Eq. 11 ablation: every preferred arch equally often, whatever its (embed, depth) group's size."""
    from training.preferred import load_preferred
    from zoo import Arch

    _, entries = load_preferred(preferred)
    archs = [Arch.from_dict(e["arch"]) for e in entries]
    draws = [PreferredSampler(archs, seed=0, balanced=False)(step) for step in range(6000)]
    for a in archs:
        assert abs(draws.count(a) / len(draws) - 1 / len(archs)) < 0.03, a
    with pytest.raises(ValueError, match="preferred-plain"):
        TrainConfig(sampler="plain", preferred=str(preferred))


def test_training_learns_and_writes_artifacts(tmp_path, preferred):
    from training.data import load_data
    from training.evaluate import accuracy, load_supernet, tensor_batches
    from zoo import ViTSupernet

    cfg = TrainConfig(out=str(tmp_path), space="mini", preferred=preferred, epochs=0.15, batch_size=64, log_every=16,
                      ckpt_every=1000, warmup_epochs=0.02, progress=False)
    out = train(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == int(0.15 * (55000 // 64))
    assert log[-1]["loss"] < log[0]["loss"]
    supernet = load_supernet(out / "supernet.safetensors")
    assert set(supernet.state_dict()) == set(ViTSupernet(MINI).state_dict())
    val, _ = load_data("fashion-mnist", "val")
    top1 = accuracy(supernet, MINI.largest_arch(), tensor_batches(val, 500, limit=2000)).top1
    assert top1 > 30, top1  # chance is 10%; 0.15 epoch reaches about 43%
    assert Checkpoint(out).load()["step"] == log[-1]["step"]


def test_synthetic_throughput_data_trains_a_1000_class_space_but_real_data_must_match(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "tiny"), space="autoformer-tiny", sampler="uniform", data="synthetic:8",
                      augment=False, epochs=1, batch_size=4, ckpt_every=1000, progress=False)
    out = train(cfg)
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()][-1] == 2
    assert (out / "supernet.safetensors").is_file()
    with pytest.raises(ValueError, match="fashion-mnist has 10 classes but space autoformer-tiny has 1000"):
        train(TrainConfig(out=str(tmp_path / "fm"), space="autoformer-tiny", sampler="uniform", data="fashion-mnist"))


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, preferred):
    full = _cli(*_train_args(tmp_path / "full", preferred, steps_epochs="0.025"))
    assert full.returncode == 0, full.stderr
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "training", *_train_args(killed_dir, preferred, "0.025")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = Checkpoint(killed_dir)
    deadline = time.time() + 120
    while not ckpt.path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.header()["step"]
    total = int(0.025 * (55000 // 32))
    assert 0 < killed_at < total, "the run must be killed mid-way for this test to mean anything"
    resumed = _cli(*_train_args(killed_dir, preferred, "0.025"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(tmp_path / "full" / "supernet.safetensors"), load_file(killed_dir / "supernet.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_corrupt_checkpoint_is_refused(tmp_path, preferred):
    out = tmp_path / "run"
    assert _cli(*_train_args(out, preferred, "0.003")).returncode == 0
    data = bytearray((out / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "checkpoint.pt").write_bytes(bytes(data))
    bad = _cli(*_train_args(out, preferred, "0.006"))
    assert bad.returncode == 2 and "is corrupt: sha256" in bad.stderr and "Traceback" not in bad.stderr


# Runs the training CLI with os.replace (the commit step of every atomic write) killing the process with SIGKILL
# just before or just after its N-th call: a kill at the worst instant of each file commit.
KILL_AT_RENAME = """
import os, signal, sys
from training.__main__ import main
n, when, calls, real = int(sys.argv[1]), sys.argv[2], [0], os.replace
def replace(src, dst, **kw):
    calls[0] += 1
    if calls[0] == n and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, **kw)
    if calls[0] == n and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_a_kill_at_any_file_commit_resumes_to_the_uninterrupted_result(tmp_path, preferred):
    """Renames of one 8-step run (checkpoints every 4): config.json, checkpoint @4, checkpoint @8, supernet."""
    args = lambda out: _train_args(out, preferred, "0.005")  # 8 steps
    assert _cli(*args(tmp_path / "full")).returncode == 0
    reference = load_file(tmp_path / "full" / "supernet.safetensors")
    reference_steps = [json.loads(line)["step"] for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    for n in range(1, 5):
        for when in ("before", "after"):
            out = tmp_path / f"kill-{n}-{when}"
            killed = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(n), when, *args(out)], cwd=ROOT,
                                    capture_output=True, timeout=300)
            assert killed.returncode == -signal.SIGKILL, (n, when, killed.stderr[-2000:])
            resumed = _cli(*args(out))
            assert resumed.returncode == 0, (n, when, resumed.stderr)
            resumed_weights = load_file(out / "supernet.safetensors")  # bit-exact (file bytes vary: metadata order)
            assert all(torch.equal(resumed_weights[k], v) for k, v in reference.items()), (n, when)
            steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
            assert steps == reference_steps, (n, when)
            assert not list(out.glob(".*.tmp")), (n, when)


def test_ddp_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path, preferred):
    """Same samples, same archs: DDP's averaged gradients equal one process over the global batch."""
    fixed = ["--no-augment", "--drop-path", "0"]  # no per-process randomness left
    ddp_args = _train_args(tmp_path / "ddp", preferred, "0.006", batch_size=16) + fixed
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          "-m", "training", *ddp_args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = _cli(*_train_args(tmp_path / "single", preferred, "0.006", batch_size=32), *fixed)
    assert one.returncode == 0, one.stderr
    steps = [Checkpoint(tmp_path / d).header()["step"] for d in ("ddp", "single")]
    assert steps[0] == steps[1] > 5
    a, b = (load_file(tmp_path / d / "supernet.safetensors") for d in ("ddp", "single"))
    init = torch.manual_seed(0) and __import__("zoo").ViTSupernet(MINI).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3  # and training did move the weights


@pytest.mark.slow
def test_evaluate_and_search_cli(tmp_path, preferred):
    out = tmp_path / "run"
    assert _cli(*_train_args(out, preferred, "0.01")).returncode == 0
    ev = _cli("evaluate", "--run", str(out), "--split", "val")
    assert ev.returncode == 0, ev.stderr
    doc = json.loads((out / "eval_val.json").read_text())
    assert doc["kind"] == "prezoo.eval" and len(doc["results"]) >= 5
    assert all(0 <= r["top1"] <= r["top5"] <= 100 and r["n"] == 5000 for r in doc["results"])
    se = _cli("search", "--run", str(out), "--max-params", "0.3M", "--population", "6", "--generations", "2",
              "--val-images", "500")
    assert se.returncode == 0, se.stderr
    assert "best under the budget" in se.stdout
    aged = _cli("search", "--run", str(out), "--algorithm", "aging", "--evaluations", "7", "--population", "4",
                "--min-params", "0.25M", "--max-params", "0.3M", "--val-images", "500", "--out", str(tmp_path / "aged"))
    assert aged.returncode == 0, aged.stderr
    doc = json.loads((tmp_path / "aged" / "search.json").read_text())
    assert doc["algorithm"] == "aging" and doc["evaluations"] == len(doc["evaluated"]) == 7
    assert all(2.5e5 <= a["params"] < 3e5 for a in doc["evaluated"])
    assert "the first 500 of the 5000 images" in doc["fitness"]
    full = _cli("search", "--run", str(out), "--algorithm", "random", "--evaluations", "2", "--max-flops", "10M",
                "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    doc = json.loads((tmp_path / "full" / "search.json").read_text())
    assert "all 5000 images held out" in doc["fitness"] and all(a["flops"] < 1e7 for a in doc["evaluated"])
    bad = _cli("search", "--run", str(out), "--max-params", "1K")
    assert bad.returncode == 2 and "no architecture of mini fits" in bad.stderr
    missing = _cli("evaluate", "--run", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "config.json is missing" in missing.stderr


# -- the command line: numbers range-checked at parse time, strict JSON, one-line errors ----------------------------
@pytest.mark.parametrize("flag, value", [("--warmup-epochs", "nan"), ("--weight-decay", "nan"), ("--lr", "inf"),
                                         ("--label-smoothing", "2"), ("--epochs", "-1"), ("--sandwich", "-2"),
                                         ("--drop-path", "1"), ("--batch-size", "1e30"), ("--seed", "-1"),
                                         ("--workers", "-1"), ("--val-size", "1.5"), ("--sampler", "magic"),
                                         ("--space", ""), ("--preferred", " ")])
def test_train_flags_are_refused_at_parse_time(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["train", "--space", "mini", "--sampler", "uniform", flag, value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"python -m training train: error: argument {flag}")


def test_every_numeric_setting_refuses_nan():
    numeric = [f.name for f in dataclasses.fields(TrainConfig) if str(f.type).split(" ")[0] in ("int", "float")]
    assert len(numeric) >= 19
    for name in numeric:
        with pytest.raises(ValueError, match=f"^{name} must be an? (int|float) in"):
            TrainConfig(sampler="uniform", **{name: float("nan")})


def test_an_existing_file_as_out_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("mine\n")
    for out in ("file", "file/run"):
        with pytest.raises(SystemExit):
            parse_args(["train", "--space", "mini", "--sampler", "uniform", "--out", str(tmp_path / out)])
        assert capsys.readouterr().err.splitlines()[-1].endswith("file is a file, not a folder")
    assert (tmp_path / "file").read_text() == "mine\n"


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory) -> Path:
    """A one-step `mini` run of the uniform sampler: it has no preferred set of its own."""
    cfg = TrainConfig(out=str(tmp_path_factory.mktemp("uniform") / "run"), space="mini", sampler="uniform",
                      data="synthetic:64", augment=False, epochs=0.5, batch_size=32, warmup_epochs=0, progress=False)
    return train(cfg)


def test_evaluating_a_run_without_a_preferred_set_says_what_to_give(uniform_run, capsys):
    assert training_main(["evaluate", "--run", str(uniform_run)]) == 2
    assert capsys.readouterr().err == (f"error: {uniform_run} was trained with the uniform sampler and has no "
                                       f"preferred set: give --preferred\n")
    assert not (uniform_run / "eval_test.json").exists()


@pytest.mark.parametrize("text, message", [("{", "not a training run's config: Expecting"),
                                           ("[]", "must be a JSON object, got list"),
                                           ('{"sampler": "uniform", "lr": NaN}', r"lr must be a float in \(0, 10\]"),
                                           ('{"space": 3}', "space must be a str, got 3")])
def test_a_damaged_config_json_is_named(uniform_run, tmp_path, capsys, text, message):
    run = tmp_path / "run"
    shutil.copytree(uniform_run, run)
    (run / "config.json").write_text(text)
    assert training_main(["evaluate", "--run", str(run), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'config.json'}") and re.search(message, err) and err.count("\n") == 1


def test_what_the_commands_write_is_strict_json(uniform_run, tmp_path):
    strict = lambda text: json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    strict((uniform_run / "config.json").read_text())
    [strict(line) for line in (uniform_run / "log.jsonl").read_text().splitlines()]
    with pytest.raises(ValueError, match=r"refusing to write .*x.json: history\[1\].loss must be a finite number"):
        write_json(tmp_path / "x.json", {"history": [{"loss": 1.0}, {"loss": float("inf")}]})
    assert not (tmp_path / "x.json").exists()
