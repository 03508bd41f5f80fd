"""Importing official AutoFormer/PreNAS checkpoints: same function before and after the mapping."""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import timm.scheduler
import torch
import torch.nn.functional as F

from zoo import Arch, SearchSpace, Zoo, get_space
from zoo.__main__ import main as zoo_cli
from zoo.official import OFFICIAL_PREFERRED, import_official, official_to_prezoo

SPACE = SearchSpace(name="af-test", embed_dims=(16, 24), depths=(2, 3), num_heads=(1, 2), mlp_ratios=(1.5, 2.0),
                    head_dim=8, patch_size=4, img_size=16, in_chans=3, num_classes=5, rel_pos=True, norm_eps=1e-5)


def official_state(space: SearchSpace = SPACE, seed: int = 0, std: float = 0.2) -> dict[str, torch.Tensor]:
    """Random weights with AutoFormer's key names and shapes for `space`'s supernet (qkv rows interleaved)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * std
    S, Q = space.super_embed_dim, space.super_num_heads * space.head_dim
    H, P, C = int(space.super_embed_dim * space.super_mlp_ratio), space.patch_size, space.num_classes
    sd = {"patch_embed_super.proj.weight": r(S, space.in_chans, P, P), "patch_embed_super.proj.bias": r(S),
          "cls_token": r(1, 1, S), "pos_embed": r(1, space.num_tokens, S), "norm.weight": 1 + r(S),
          "norm.bias": r(S), "head.weight": r(C, S), "head.bias": r(C)}
    for i in range(space.super_depth):
        p = f"blocks.{i}."
        sd |= {p + "attn.qkv.weight": r(3 * Q, S), p + "attn.qkv.bias": r(3 * Q), p + "attn.proj.weight": r(S, Q),
               p + "attn.proj.bias": r(S), p + "attn_layer_norm.weight": 1 + r(S), p + "attn_layer_norm.bias": r(S),
               p + "ffn_layer_norm.weight": 1 + r(S), p + "ffn_layer_norm.bias": r(S), p + "fc1.weight": r(H, S),
               p + "fc1.bias": r(H), p + "fc2.weight": r(S, H), p + "fc2.bias": r(S)}
        for kv in "kv":
            for vh in "vh":
                sd[p + f"attn.rel_pos_embed_{kv}.embeddings_table_{vh}"] = r(2 * space.grid_size + 2, space.head_dim)
    return sd


def autoformer_index(n_tokens: int, max_rel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AutoFormer's RelativePosition2D_super index computation, as written there."""
    length = n_tokens - 1
    side = int(length**0.5)
    rng = torch.arange(length)
    dv = rng[None, :] // side - rng[:, None] // side
    dh = rng[None, :] % side - rng[:, None] % side
    fv = F.pad(dv.clamp(-max_rel, max_rel) + max_rel + 1, (1, 0, 1, 0))
    fh = F.pad(dh.clamp(-max_rel, max_rel) + max_rel + 1, (1, 0, 1, 0))
    return fv, fh


def official_forward(sd, x, arch: Arch, space: SearchSpace = SPACE) -> torch.Tensor:
    """The AutoFormer/PreNAS forward with its own slicing: interleaved qkv rows c, c+3, … < 3Q."""
    E, hd = arch.embed_dim, space.head_dim
    ln = lambda t, k: F.layer_norm(t, (E,), sd[k + ".weight"][:E], sd[k + ".bias"][:E], 1e-5)
    x = F.conv2d(x, sd["patch_embed_super.proj.weight"][:E], sd["patch_embed_super.proj.bias"][:E],
                 stride=space.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"][..., :E].expand(len(x), -1, -1), x], 1) + sd["pos_embed"][..., :E]
    B, N, _ = x.shape
    fv, fh = autoformer_index(N, space.grid_size)
    for i in range(arch.depth):
        p, h = f"blocks.{i}.", arch.num_heads[i]
        Q, H = h * hd, int(E * arch.mlp_ratios[i])
        W, b = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]
        rows = torch.cat([torch.arange(c, 3 * Q, 3) for c in range(3)])
        qkv = F.linear(ln(x, p + "attn_layer_norm"), W[rows, :E], b[rows])
        q, k, v = qkv.reshape(B, N, 3, h, hd).permute(2, 0, 3, 1, 4)
        table = lambda kv, p=p: sd[p + f"attn.rel_pos_embed_{kv}.embeddings_table_v"][fv] + \
            sd[p + f"attn.rel_pos_embed_{kv}.embeddings_table_h"][fh]
        attn = (q @ k.transpose(-2, -1)) * hd**-0.5
        attn = attn + (q.permute(2, 0, 1, 3).reshape(N, h * B, -1) @ table("k").transpose(2, 1)) \
            .transpose(1, 0).reshape(B, h, N, N) * hd**-0.5
        attn = attn.softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        out = out + (attn.permute(2, 0, 1, 3).reshape(N, B * h, -1) @ table("v")).transpose(1, 0) \
            .reshape(B, h, N, -1).transpose(2, 1).reshape(B, N, -1)
        x = x + F.linear(out, sd[p + "attn.proj.weight"][:E, :Q], sd[p + "attn.proj.bias"][:E])
        hmid = F.gelu(F.linear(ln(x, p + "ffn_layer_norm"), sd[p + "fc1.weight"][:H, :E], sd[p + "fc1.bias"][:H]))
        x = x + F.linear(hmid, sd[p + "fc2.weight"][:E, :H], sd[p + "fc2.bias"][:E])
    x = ln(x, "norm")[:, 1:].mean(1)
    return F.linear(x, sd["head.weight"][:, :E], sd["head.bias"])


ARCHS = [Arch(16, 2, (1, 2), (1.5, 2.0)), Arch(24, 3, (2, 1, 2), (2.0, 1.5, 1.5)), Arch(24, 3, (2, 2, 2), (2.0,) * 3)]


def save_as_the_official_script(path: Path, sd: dict[str, torch.Tensor], space: SearchSpace) -> None:
    """What PreNAS's supernet_train.py writes every 10 epochs: weights, optimizer, scheduler, scaler and `args`."""
    parser = argparse.ArgumentParser("AutoFormer training and evaluation script")
    parser.add_argument("--cfg", default="experiments/supernet/tiny.yaml")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--relative_position", action="store_true")
    parser.add_argument("--mode", choices=["super", "retrain"], default="super")
    parser.add_argument("--output_dir", default="./logs/")
    args = parser.parse_args(["--relative_position", "--input-size", str(space.img_size)])
    args.nb_classes, args.distributed, args.gpu = space.num_classes, False, 0  # set by main() before saving
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=args.lr)
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler = timm.scheduler.CosineLRScheduler(optimizer, t_initial=500)
    torch.save({"model": sd, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                "epoch": 499, "scaler": torch.amp.GradScaler("cpu").state_dict(), "args": args}, path)


def import_official_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", "import-official", *argv], capture_output=True, text=True,
                          timeout=600)


def random_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    rng = random.Random(seed)
    depths = [rng.choice(space.depths) for _ in range(n)]
    return [Arch(rng.choice(space.embed_dims), d, tuple(rng.choices(space.num_heads, k=d)),
                 tuple(rng.choices(space.mlp_ratios, k=d))) for d in depths]


def check_mapping(tmp_path: Path, space: SearchSpace, preferred: list[Arch], others: list[Arch], std: float,
                  batch: int) -> None:
    """Import an official-format checkpoint with the CLI; every subnet's logits match the official forward."""
    sd = official_state(space, std=std)
    save_as_the_official_script(tmp_path / "supernet.pth", sd, space)
    cands = {str(k): [{"layer_num": a.depth, "embed_dim": [a.embed_dim] * a.depth,
                       "num_heads": list(a.num_heads), "mlp_ratio": list(a.mlp_ratios), "num_params": 0.0}]
             for k, a in enumerate(preferred)}
    (tmp_path / "cands.json").write_text(json.dumps(cands))
    space.save(tmp_path / "space.yaml")
    run = import_official_cli("--checkpoint", str(tmp_path / "supernet.pth"), "--space", str(tmp_path / "space.yaml"),
                              "--preferred", str(tmp_path / "cands.json"), "--out", str(tmp_path / "z"))
    assert run.returncode == 0, run.stderr
    zoo = Zoo.load(tmp_path / "z")
    assert [e.arch for e in zoo.entries] == preferred
    x = torch.randn(batch, space.in_chans, space.img_size, space.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for arch in preferred + others:
            ref = official_forward(sd, x, arch, space)
            torch.testing.assert_close(zoo.subnet(arch)(x), ref, rtol=1e-5, atol=1e-5, msg=lambda m, a=arch: f"{a} {m}")


def test_mapping_preserves_every_subnet(tmp_path):
    check_mapping(tmp_path, SPACE, ARCHS, [SPACE.smallest_arch(), SPACE.largest_arch()], std=0.2, batch=3)


@pytest.mark.slow
def test_official_tiny_preferred_archs_match_the_official_forward(tmp_path):
    space = get_space("autoformer-tiny")
    preferred = [e.arch for e in OFFICIAL_PREFERRED["autoformer-tiny"]]
    others = [space.smallest_arch(), space.largest_arch(), *random_archs(space, 2)]
    check_mapping(tmp_path, space, preferred, others, std=0.02, batch=2)


def test_qkv_rows_are_deinterleaved():
    t = torch.arange(12.0)
    out = official_to_prezoo({"blocks.0.attn.qkv.bias": t})["blocks.0.attn.qkv.bias"]
    assert out.tolist() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]


class TrainingState(collections.OrderedDict):
    """A user's own container class: not an allowed global."""


class Settings:
    def __init__(self, lr):
        self.lr = lr


class RunsACommand:
    """Pickles as os.system(command): what a hostile checkpoint would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def refused_cli(tmp_path: Path, capsys, ckpt: object, name: str) -> str:
    """`python -m zoo import-official` (its main(), in this process) on a checkpoint holding `ckpt`: exit 2, and
    what it printed on stderr."""
    path = tmp_path / name
    torch.save(ckpt, path)
    code = zoo_cli(["import-official", "--checkpoint", str(path), "--space", "autoformer-tiny", "--preferred", "x.json",
                    "--out", str(tmp_path / "z")])
    out, err = capsys.readouterr()
    assert code == 2 and not out and not (tmp_path / "z").exists(), err
    return err


def test_other_pickled_objects_are_refused_in_one_clean_line(tmp_path, capsys):
    marker = tmp_path / "ran"
    hostile = {"model": TrainingState(official_state()), "args": argparse.Namespace(lr=1e-3)}
    cases = [(hostile, f"{__name__}.TrainingState"), ({"model": official_state(), "args": Settings(1e-3)},
                                                     f"{__name__}.Settings"),
             ({"model": official_state(), "args": RunsACommand(f"touch {marker}")}, f"{os.system.__module__}.system")]
    for ckpt, refused in cases:
        err = refused_cli(tmp_path, capsys, ckpt, "ckpt\x1b[2J\x1b[31m.pth")  # a name that would clear and recolour
        assert err.count("\n") == 1 and err.startswith("error: ") and "\x1b" not in err, err
        assert "ckpt\\x1b[2J\\x1b[31m.pth could not be loaded safely (weights_only=True): it holds a pickled " \
               f"{refused}; only tensors, containers and argparse.Namespace are accepted" in err, err
    assert not marker.exists(), "unpickling ran the command"


def test_mismatched_checkpoints_are_refused(tmp_path):
    sd = official_state()
    sd.pop("head.bias")
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \['head.bias'\]"):
        import_official(str(tmp_path / "partial.pth"), SPACE, "x.json", str(tmp_path / "z"), "z")
    torch.save({"model": argparse.Namespace(lr=1e-3)}, tmp_path / "args-only.pth")
    with pytest.raises(ValueError, match="holds a Namespace, not a state dict"):
        import_official(str(tmp_path / "args-only.pth"), SPACE, "x.json", str(tmp_path / "z"), "z")
