"""Fine-tuning, timm-style: new heads and input channels on load, the classifier/feature API, and
`python -m training finetune` on a small image folder (loss falls; the result loads with timm, same logits)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.models import adapt_input_conv

from export.hf import write_hf_folder
from tests.test_cards import python_blocks, run_block
from tests.zoo_fixtures import ENTRY_ARCHS, MINI, PREPROCESSING, make_zoo
from training.data import load_data
from training.finetune import FinetuneConfig, finetune, load_teacher, write_result
from zoo import PreZooViT, ViTSupernet, Zoo, ZooEntry, flops, params
from zoo.store import write_zoo

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["blue", "green", "red", "stripes"]
TEACHER_ORDER = ["stripes", "red", "blue", "green"]
BACKBONE = ("patch_embed.proj.bias", "cls_token", "pos_embed", "blocks.1.attn.qkv.weight", "blocks.2.mlp.fc2.weight",
            "norm.weight")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return Zoo.load(make_zoo(tmp_path_factory.mktemp("zoo")))


@pytest.fixture(scope="module")
def exported(zoo, tmp_path_factory) -> Path:
    """An exported 10-class, 1-channel subnet (the mini space: 28² gray, Fashion-MNIST classes)."""
    return write_hf_folder(zoo, zoo.entries[1], tmp_path_factory.mktemp("hf"))


def _gray(n=4, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


# -- num_classes / in_chans on load (timm and the HF mixin alike) -------------------------------------


@pytest.mark.parametrize("loader", ["timm", "mixin"])
def test_num_classes_keeps_the_backbone_and_builds_a_fresh_head(exported, loader):
    torch.manual_seed(0)
    model = timm.create_model(f"local-dir:{exported}", pretrained=True, num_classes=5) if loader == "timm" \
        else PreZooViT.from_pretrained(exported, num_classes=5)
    saved = _saved(exported)
    for name in BACKBONE:
        assert torch.equal(model.state_dict()[name], saved[name]), name
    assert model.head.weight.shape == (5, saved["head.weight"].shape[1]) and model.num_classes == 5
    assert model.space.num_classes == 5 and len(model.labels) == 5
    assert not torch.equal(model.head.weight[:5], saved["head.weight"][:5])
    assert model.eval()(_gray()).shape == (4, 5)
    # the model's own numbers follow its new head: closed-form params equal its weights
    assert params(model.space, model.arch) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("loader", ["timm", "mixin"])
def test_in_chans_adapts_the_patch_conv_like_timm(exported, loader):
    model = timm.create_model(f"local-dir:{exported}", pretrained=True, in_chans=3) if loader == "timm" \
        else PreZooViT.from_pretrained(exported, in_chans=3)
    saved = _saved(exported)
    weight = model.patch_embed.proj.weight
    assert weight.shape[1] == 3 and model.in_chans == 3 and model.space.in_chans == 3
    assert torch.equal(weight, adapt_input_conv(3, saved["patch_embed.proj.weight"], base_chans=1))
    # a gray image repeated over RGB gives the 1-channel model's logits
    gray = _gray()
    ref = PreZooViT.from_pretrained(exported)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(gray.expand(-1, 3, -1, -1)), ref(gray), atol=1e-5, rtol=1e-5)


def test_img_size_and_pooling_stay_refused(exported):
    with pytest.raises(ValueError, match="trained with img_size=28"):
        timm.create_model(f"local-dir:{exported}", pretrained=True, img_size=32)
    with pytest.raises(ValueError, match="trained with global_pool=avg"):
        PreZooViT.from_pretrained(exported, global_pool="token")


# -- the classifier / feature API ---------------------------------------------------------------------


def test_features_and_head_compose_to_forward(zoo):
    model = zoo.subnet(zoo.entries[2])
    x = _gray()
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (4, MINI.num_tokens, model.arch.embed_dim)
        assert torch.equal(model.forward_head(tokens), model(x))
        pooled = model.forward_head(tokens, pre_logits=True)
        assert torch.equal(pooled, tokens[:, 1:].mean(dim=1))
        assert model.get_classifier() is model.head
        model.reset_classifier(0)
        assert torch.equal(model(x), pooled) and model.num_classes == 0
        model.reset_classifier(3)
        assert model(x).shape == (4, 3) and model.space.num_classes == 3
    with pytest.raises(ValueError, match="cannot switch to 'token'"):
        model.reset_classifier(3, global_pool="token")


def test_forward_intermediates_shapes_and_options(zoo):
    model = zoo.subnet(zoo.entries[2])  # depth 5, embed 96, 7x7 patches
    E, g = model.arch.embed_dim, MINI.grid_size
    x = _gray()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == 5 and all(t.shape == (4, E, g, g) for t in inter)
        assert torch.equal(final, model.forward_features(x))
        last2 = model.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True)
        assert [t.shape for t in last2] == [(4, g * g, E)] * 2
        assert torch.equal(last2[1], inter[4].flatten(2).transpose(1, 2))
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True,
                                             output_fmt="NLC")
        assert torch.allclose(normed[0], final[:, 1:])
        with_cls = model.forward_intermediates(x, indices=[0], return_prefix_tokens=True, intermediates_only=True)
        assert with_cls[0][0].shape == (4, E, g, g) and with_cls[0][1].shape == (4, 1, E)
        early, early_inter = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early_inter[0], inter[1]) and early.shape == final.shape
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_features_only_model(exported, zoo):
    features = timm.create_model(f"local-dir:{exported}", pretrained=True, features_only=True, out_indices=(0, 2))
    full = PreZooViT.from_pretrained(exported)
    E = full.arch.embed_dim
    assert features.feature_info.channels() == [E, E] and features.feature_info.reduction() == [4, 4]
    assert len(features.model.blocks) == 3 and features.model.num_classes == 0  # pruned after block 2, no head
    x = _gray()
    with torch.no_grad():
        out = features(x)
        ref = full.forward_intermediates(x, indices=(0, 2), intermediates_only=True)
    assert [o.shape for o in out] == [(4, E, 7, 7)] * 2
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b)
    default = timm.create_model(f"local-dir:{exported}", pretrained=True, features_only=True)
    assert len(default(x)) == 3  # timm's ViT default: the last three blocks


# -- fine-tuning on an image folder -------------------------------------------------------------------


def _image(label: str, rng: np.random.Generator) -> np.ndarray:
    """28x28 RGB: a noisy solid colour, or noisy black-and-white horizontal stripes."""
    img = rng.integers(0, 60, (28, 28, 3))
    if label == "stripes":
        img[::4] += 190
        img[1::4] += 190
    else:
        img[..., ["red", "green", "blue"].index(label)] += 190
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / "train" / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(_image(c, rng)).save(root / "train" / c / f"{i}.png")
    return root


@pytest.mark.slow
def test_finetune_cli_on_a_folder_and_the_result_loads_with_timm(exported, folder, tmp_path):
    out = tmp_path / "ft"
    cli = subprocess.run([sys.executable, "-m", "training", "finetune", "--model", str(exported),
                          "--data", f"folder:{folder}", "--epochs", "4", "--lr", "2e-3", "--batch-size", "16",
                          "--val-size", "24", "--out", str(out), "--no-progress"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    assert "val top-1" in cli.stdout and "epoch 4/4" in cli.stdout + cli.stderr
    doc = json.loads((out / "finetune.json").read_text())
    history = doc["history"]
    assert [h["epoch"] for h in history] == list(range(1, 5))
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.8  # the loss falls
    assert history[-1]["val_top1"] > 100 / len(CLASSES) + 25  # far above chance on the 24 held-out images
    assert (out / "val_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert "library_name: prezoo" in card and "- timm" not in card and "val_curve.png" in card and "stripes" in card
    [usage] = python_blocks(card)  # the card's code, as pasted, in the result folder
    assert run_block(usage, out).splitlines()[-1].split(":")[0] in CLASSES
    import zoo  # noqa: F401  (registers prezoo_vit with timm)

    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert loaded.num_classes == len(CLASSES) and loaded.in_chans == 3
    assert loaded.pretrained_cfg["mean"] == list(timm.data.IMAGENET_DEFAULT_MEAN)
    mixin = PreZooViT.from_pretrained(out)
    assert mixin.labels == CLASSES
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), mixin(x))


@pytest.fixture(scope="module")
def teacher_zoo(tmp_path_factory) -> Path:
    """A zoo of the folder's classes, in another order than the folder's (its logits must be reordered)."""
    space = dataclasses.replace(MINI, num_classes=len(CLASSES))
    torch.manual_seed(1)
    entries = [ZooEntry(a, params(space, a), flops(space, a), 50.0, 100.0, 1.0) for a in ENTRY_ARCHS[:2]]
    return write_zoo(tmp_path_factory.mktemp("teacher"), name="teacher", space=space,
                     state=ViTSupernet(space).state_dict(), entries=entries, classes=TEACHER_ORDER,
                     preprocessing=PREPROCESSING, weights_dtype=torch.float32, dataset="test",
                     eval_protocol="test inputs")


def test_teacher_sees_its_own_preprocessing_and_answers_in_the_data_order(teacher_zoo, folder):
    _, info = load_data(f"folder:{folder}", "val", img_size=28, val_size=4)
    teacher = load_teacher(str(teacher_zoo), info, torch.device("cpu"))
    assert teacher.model.arch == ENTRY_ARCHS[1]  # the largest entry
    gray = torch.rand(2, 1, 28, 28)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    student_batch = (gray.expand(-1, 3, -1, -1) - mean) / std  # a gray picture, as the RGB folder pipeline sees it
    as_teacher = (gray - PREPROCESSING["mean"][0]) / PREPROCESSING["std"][0]
    torch.testing.assert_close(teacher.view(student_batch), as_teacher, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        own = teacher.model(as_teacher)
        logits = teacher.logits(student_batch)
    for i, c in enumerate(info.labels):
        torch.testing.assert_close(logits[:, i], own[:, TEACHER_ORDER.index(c)], atol=1e-5, rtol=1e-5)


def test_finetune_returns_the_model_it_writes_and_distills(exported, folder, teacher_zoo, tmp_path):
    cfg = FinetuneConfig(model=str(exported), data=f"folder:{folder}", out=str(tmp_path / "ft"), epochs=2,
                         batch_size=32, val_size=24, distill=str(teacher_zoo), progress=False)
    result = finetune(cfg)
    assert json.loads((result.out / "finetune.json").read_text())["teacher"].startswith("teacher/")
    assert "distilled from `teacher/" in (result.out / "README.md").read_text()
    loaded = timm.create_model(f"local-dir:{result.out}", pretrained=True).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))


def test_distill_refuses_a_zoo_with_other_classes(exported, folder, zoo, tmp_path):
    cfg = FinetuneConfig(model=str(exported), data=f"folder:{folder}", out=str(tmp_path / "ft"), epochs=1,
                         distill=str(zoo.root), progress=False)
    with pytest.raises(ValueError, match="distillation on logits needs the data's classes"):
        finetune(cfg)
    assert not (tmp_path / "ft").exists()


def test_finetune_cli_errors_are_one_line(tmp_path, folder):
    cli = subprocess.run([sys.executable, "-m", "training", "finetune", "--model", str(tmp_path),
                          "--data", f"folder:{folder}", "--out", str(tmp_path / "ft")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cli.returncode == 2 and cli.stderr.startswith("error:") and "no config.json" in cli.stderr


def test_finetune_from_the_hub_names_its_base_model(exported, folder, local_hub, monkeypatch, tmp_path):
    from export.hub import push_folder
    from zoo.pull import HubError

    monkeypatch.setenv("HF_TOKEN", "test-admin-token")
    push_folder(exported, "prezoo/finetune-base")
    cfg = FinetuneConfig(model="hf-hub:prezoo/finetune-base", data=f"folder:{folder}", out=str(tmp_path / "ft"),
                         epochs=1, val_size=24, progress=False)
    result = finetune(cfg)
    assert "base_model: prezoo/finetune-base" in (result.out / "README.md").read_text()
    with pytest.raises(HubError, match="no model repo 'prezoo/absent'"):
        finetune(dataclasses.replace(cfg, model="hf-hub:prezoo/absent"))


@pytest.mark.parametrize("flag, value", [("--label-smoothing", "nan"), ("--label-smoothing", "2"),
                                         ("--warmup-epochs", "nan"), ("--weight-decay", "nan"), ("--lr", "0"),
                                         ("--epochs", "1.5"), ("--val-size", "0"), ("--distill-alpha", "inf"),
                                         ("--distill-temperature", "-1"), ("--seed", "-1"), ("--model", "")])
def test_finetune_flags_are_refused_at_parse_time(capsys, flag, value):
    from training.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["finetune", "--model", "m", "--data", "folder:d", flag, value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"python -m training finetune: error: argument {flag}")


def test_finetune_out_an_existing_file_is_refused_and_left_alone(tmp_path, capsys):
    from training.__main__ import parse_args

    (tmp_path / "file").write_text("mine\n")
    with pytest.raises(SystemExit):
        parse_args(["finetune", "--model", "m", "--data", "folder:d", "--out", str(tmp_path / "file")])
    assert capsys.readouterr().err.splitlines()[-1].endswith("file is a file, not a folder")
    assert (tmp_path / "file").read_text() == "mine\n"


def test_finetune_settings_and_results_are_finite(exported, folder, tmp_path):
    with pytest.raises(ValueError, match=r"label_smoothing must be a float in \[0, 1\), got nan"):
        FinetuneConfig(model=str(exported), data=f"folder:{folder}", label_smoothing=float("nan"))
    cfg = FinetuneConfig(model=str(exported), data=f"folder:{folder}", out=str(tmp_path / "ft"), progress=False)
    _, info = load_data(cfg.data, "val", img_size=28, val_size=4)
    model = PreZooViT.from_pretrained(exported, num_classes=len(CLASSES), in_chans=3)
    history = [{"epoch": 1, "train_loss": float("nan"), "val_top1": 0.0, "val_loss": 1.0}]
    with pytest.raises(ValueError, match=r"finetune.json: history\[0\].train_loss must be a finite number"):
        write_result(tmp_path / "ft", model, cfg, info, history, None)
    assert not (tmp_path / "ft").exists()


def test_a_hytra_export_is_read_and_carded_as_hytra(tmp_path):
    """Fine-tuning reaches a family through its export's config.json (`family_of_config`): not only the ViT's."""
    from tests.test_family import make_hytra_zoo
    from training.finetune import saved_model

    hytra = Zoo.load(make_hytra_zoo(tmp_path / "zoo"))
    exported = write_hf_folder(hytra, hytra.entries[0], tmp_path / "hf")
    family, space = saved_model(exported)
    assert family.name == "hytra" and space == hytra.space
    model = family.pretrained.from_pretrained(exported, num_classes=len(CLASSES))
    model.labels, model.preprocessing = CLASSES, hytra.preprocessing
    cfg = FinetuneConfig(model=str(exported), data="synthetic:8", out=str(tmp_path / "ft"))
    _, info = load_data("synthetic:8", "val", img_size=28, in_chans=1, val_size=4)
    write_result(tmp_path / "ft", model, cfg, info, [{"epoch": 1, "train_loss": 1.0, "val_top1": 50.0,
                                                      "val_loss": 1.0}], None)
    card = (tmp_path / "ft" / "README.md").read_text()
    assert f"# PreZoo HyTra `{model.arch.id}`" in card and family.describe_arch(space, model.arch) in card
    assert "hybrid-cnn-transformer" in card and "PreZooHyTra.from_pretrained" in card
    assert type(family.pretrained.from_pretrained(tmp_path / "ft")) is type(model)
