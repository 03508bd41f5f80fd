"""The hand-designed baselines (bench/bench_baselines.py): the ladders are what they say, and a run trains, resumes
exactly where it stopped, refuses other settings, tunes, and records what a paired test against a zoo needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.bench_baselines import LADDERS, REFERENCE_CNN, VGG, macs_of, main, params_of, rung_of
from bench.bench_hostile_cli import setting
from bench.report import unpack_bits

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--data", "synthetic:256", "--val-size", "64", "--log-every", "1000"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_ladder_spans_10k_to_2m_params_and_grows():
    for family, ladder in LADDERS.items():
        models = [rung.build() for rung in ladder]
        params = [params_of(m) for m in models]
        macs = [macs_of(m) for m in models]
        assert len(ladder) >= 5 and params[0] <= 16_000 and params[-1] >= 2_000_000, (family, params)
        assert params == sorted(set(params)) and macs == sorted(set(macs)), (family, params, macs)
        assert all(m.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10) for m in models), family


def test_the_reference_cnn_is_issue_23s_net():
    """Five 3x3 conv-BN-ReLU layers (16, 16, 32, 32, 64), max-pool after the 2nd and 4th, GAP, linear."""
    model = rung_of("cnn", REFERENCE_CNN).build()
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64]
    kinds = [type(m).__name__ for m in model if isinstance(m, nn.Conv2d | nn.MaxPool2d)]
    assert kinds == ["Conv2d", "Conv2d", "MaxPool2d", "Conv2d", "Conv2d", "MaxPool2d", "Conv2d"]
    assert params_of(model) == 35_674
    assert macs_of(model) == 28**2 * (1 * 16 + 16 * 16) * 9 + 14**2 * (16 * 32 + 32 * 32) * 9 + 7**2 * 32 * 64 * 9 \
        + 64 * 10 == 5_532_544


def test_macs_are_the_flop_counters_per_image_multiply_accumulates():
    """Counted on one image in eval mode, halved: the closed form of a VGG at any widths, at 28, 14 and 7."""
    for widths, convs in (((8, 16, 32), (2, 2, 1)), ((24, 48, 96), (2, 2, 2)), ((5, 7, 11), (1, 3, 2))):
        chans, side, want = 1, 28, 0
        for width, n in zip(widths, convs, strict=True):
            for _ in range(n):
                want += side**2 * chans * width * 9
                chans = width
            side //= 2
        model = VGG(widths, convs).train()
        assert macs_of(model) == want + chans * 10 and model.training


@pytest.mark.parametrize("family, stages", [("resnet", ("layer1", "layer2", "layer3")), ("mobilenet", None)])
def test_timm_nets_are_adapted_to_28_pixels(family, stages):
    """No stride-4 stem: the stages of timm's ResNet and of the EfficientNet-built MobileNet sit at 28, 14 and 7."""
    model = LADDERS[family][2].build().eval()
    modules = [getattr(model, s) for s in stages] if stages else list(model.blocks)
    sides = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1])) for m in modules]
    model(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert sorted(set(sides), reverse=True) == [28, 14, 7] and sides == sorted(sides, reverse=True)


def run(tmp_path, out: str, *args: str) -> int:
    return main([*SMOKE, "--out", str(tmp_path / out), "--raw-dir", str(tmp_path / out / "raw"), *args])


def final_weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, capsys):
    """Stopped after epoch 1 of 2, a rerun trains epoch 2 only and ends with the weights and test answers of an
    uninterrupted run; its raw file holds one correctness bit per test image; other settings are refused."""
    one = ["--families", "cnn", "--rungs", "0", "--epochs", "2"]
    assert run(tmp_path, "cut", *one, "--stop-after", "1") == 0
    folder = tmp_path / "cut" / "cnn" / f"{LADDERS['cnn'][0].name}-s0"
    assert not (folder / "result.json").exists()
    first = torch.load(folder / "checkpoint.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in first] == [1]
    capsys.readouterr()
    assert run(tmp_path, "cut", *one) == 0
    assert "resuming after epoch 1/2" in capsys.readouterr().out
    assert run(tmp_path, "whole", *one) == 0
    whole = tmp_path / "whole" / "cnn" / folder.name
    cut_weights, whole_weights = final_weights(folder), final_weights(whole)
    assert all(torch.equal(cut_weights[k], whole_weights[k]) for k in whole_weights)
    result = json.loads((folder / "result.json").read_text())
    assert result["history"][0] == first[0] and len(result["history"]) == 2
    assert result["test_right"] == json.loads((whole / "result.json").read_text())["test_right"]

    raw = json.loads((tmp_path / "cut" / "raw" / "cnn.json").read_text())
    (model,) = raw["models"]
    assert (model["params"], model["macs"], model["epochs"], model["lr"], model["seed"]) == (9_202, macs_of(
        LADDERS["cnn"][0].build()), 2, 3e-3, 0)
    right = unpack_bits(model["test_right"], model["test_images"])
    assert model["test_images"] == 256 and 100 * right.mean() == pytest.approx(model["test_top1"], abs=1e-3)
    assert model["val_images"] == 64 and 0 <= model["val_top1"] <= 100 and model["train_seconds"] > 0

    capsys.readouterr()
    assert run(tmp_path, "cut", *one[:-1], "3") == 1  # --epochs 3: not the run in the folder
    assert "holds a run with other settings" in capsys.readouterr().err


def test_a_fresh_run_folder_adds_rungs_to_the_committed_raw_file_and_keeps_the_rest(tmp_path, capsys):
    """Rung 0 trained in one folder, rung 1 in a new one (a fresh checkout has no run folders) with the same raw
    folder: the raw file holds both, and the lr sweep it recorded stays. Another recipe in the same file is refused
    before anything trains, and the file is left as it was."""
    one = ["--epochs", "1", "--families", "cnn"]
    raw_dir = tmp_path / "raw"
    assert main([*SMOKE, *one, "--rungs", "0", "--out", str(tmp_path / "first"), "--raw-dir", str(raw_dir)]) == 0
    raw_file = raw_dir / "cnn.json"
    sweep = {"rung": LADDERS["cnn"][2].name, "epochs": 2, "seed": 0, "chosen_lr": 3e-3, "val_top1": {"0.003": 50.0}}
    raw_file.write_text(json.dumps({**json.loads(raw_file.read_text()), "tuning": sweep}))
    assert main([*SMOKE, *one, "--rungs", "1", "--out", str(tmp_path / "fresh"), "--raw-dir", str(raw_dir)]) == 0
    raw = json.loads(raw_file.read_text())
    assert [m["rung"] for m in raw["models"]] == [LADDERS["cnn"][0].name, LADDERS["cnn"][1].name]
    assert raw["tuning"] == sweep
    kept = raw_file.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"would be trained with another epochs \(2\) than the models it holds \(1\); "
                                         "one file holds one recipe"):
        main([*SMOKE, "--epochs", "2", "--families", "cnn", "--rungs", "0", "--out", str(tmp_path / "other"),
              "--raw-dir", str(raw_dir)])
    assert raw_file.read_text() == kept and not (tmp_path / "other" / "cnn").exists()
    # a model already trained elsewhere under the other recipe is refused when its folder is read, as it is added
    other = ["--epochs", "2", "--families", "cnn", "--rungs", "0", "--out", str(tmp_path / "other")]
    assert main([*SMOKE, *other, "--raw-dir", str(tmp_path / "elsewhere")]) == 0
    with pytest.raises(SystemExit, match="was trained with another epochs than the rest; one file holds one recipe"):
        main([*SMOKE, *other, "--raw-dir", str(raw_dir)])
    assert raw_file.read_text() == kept


def test_tuning_sweeps_the_middle_rung_and_trains_at_the_chosen_lr(tmp_path):
    """Two processes side by side (--jobs 2); the lr with the best validation top-1 is the family's, in the raw file.
    The command runs in a process of its own: its worker pool's helper processes (multiprocessing's resource
    tracker) and OMP_NUM_THREADS stay out of the test session."""
    args = [*SMOKE, "--out", str(tmp_path / "tune"), "--raw-dir", str(tmp_path / "tune" / "raw"), "--families", "vit",
            "--rungs", "0", "--epochs", "1", "--tune", "--tune-lrs", "1e-3,1e-2", "--tune-epochs", "1", "--jobs", "2"]
    done = subprocess.run([sys.executable, "-m", "bench.bench_baselines", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    sweep = {lr: json.loads((tmp_path / "tune" / "tune" / "vit" / f"{LADDERS['vit'][2].name}-lr{lr}-s0" /
                             "result.json").read_text())["val_top1"] for lr in ("0.001", "0.01")}
    raw = json.loads((tmp_path / "tune" / "raw" / "vit.json").read_text())
    chosen = max(sweep, key=lambda lr: (sweep[lr], -float(lr)))
    assert raw["tuning"]["val_top1"] == sweep and raw["tuning"]["chosen_lr"] == float(chosen)
    assert raw["tuning"]["rung"] == LADDERS["vit"][2].name
    (model,) = raw["models"]
    assert model["lr"] == float(chosen) and model["lr_source"] == "tuned"
    assert np.isfinite(model["test_top1"])

    # a fresh checkout (no run folders, the raw file committed) trains the next rung at the committed choice ...
    again = setting(args, "--out", str(tmp_path / "fresh"))
    assert main(list(setting(setting(again, "--rungs", "1"), "--jobs", "1"))) == 0
    assert not (tmp_path / "fresh" / "tune").exists()
    raw = json.loads((tmp_path / "tune" / "raw" / "vit.json").read_text())
    assert [(m["rung"], m["lr"], m["lr_source"]) for m in raw["models"]] == \
        [(LADDERS["vit"][r].name, float(chosen), "tuned") for r in (0, 1)]
    # ... and sweeps again when asked, or when the sweep asked for is another (its one lr: the raw file's recipe holds)
    for extra in (["--resweep"], ["--tune-lrs", chosen]):
        out, raw_dir = tmp_path / f"fresh{len(extra)}", tmp_path / f"raw{len(extra)}"
        raw_dir.mkdir()
        (raw_dir / "vit.json").write_text((tmp_path / "tune" / "raw" / "vit.json").read_text())
        assert main([*setting(setting(setting(again, "--jobs", "1"), "--out", str(out)), "--raw-dir", str(raw_dir)),
                     *extra]) == 0
        assert (out / "tune" / "vit.json").exists()


def test_ground_truth_trains_a_spaces_archs_from_scratch_across_its_params_strata(tmp_path, capsys):
    """bench_ground_truth: one arch from each of two params strata of mbconv-tiny, trained standalone by the baselines'
    machinery; the raw file holds each arch with the closed-form params of its family, and a rerun trains nothing."""
    from bench.bench_ground_truth import main as ground_truth
    from zoo.family import space_by_name

    family, space = space_by_name("mbconv-tiny")
    args = [*SMOKE, "--space", "mbconv-tiny", "--archs", "2", "--strata", "2", "--epochs", "1",
            "--out", str(tmp_path / "gt"), "--raw-dir", str(tmp_path / "raw")]
    assert ground_truth(args) == 0
    raw = json.loads((tmp_path / "raw" / "mbconv-tiny.json").read_text())
    assert raw["kind"] == "ground-truth" and raw["space"] == space.to_dict()
    archs = [family.arch_from_dict(m["arch"]["arch"]) for m in raw["models"]]
    assert [m["params"] for m in raw["models"]] == [family.params(space, a) for a in archs]
    assert len(archs) == 2 and archs[0].id != archs[1].id and archs[0].id == raw["models"][0]["rung"]
    assert all(m["test_images"] == 256 and m["val_images"] == 64 for m in raw["models"])
    capsys.readouterr()
    assert ground_truth(args) == 0
    assert "resuming" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ground_truth([*args[:-4], "--archs", "1", "--strata", "2"])  # no arch left for a stratum
