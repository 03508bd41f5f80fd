"""Importing official AutoFormer/PreNAS checkpoints: same function before and after the mapping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from zoo import Arch, SearchSpace, Zoo
from zoo.official import official_to_prezoo

SPACE = SearchSpace(name="af-test", embed_dims=(16, 24), depths=(2, 3), num_heads=(1, 2), mlp_ratios=(1.5, 2.0),
                    head_dim=8, patch_size=4, img_size=16, in_chans=3, num_classes=5, rel_pos=True, norm_eps=1e-5)


def official_state(seed=0) -> dict[str, torch.Tensor]:
    """Random weights with AutoFormer's key names and shapes (qkv rows interleaved)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2
    S, Q, H, N, rows = 24, 16, 48, SPACE.num_tokens, 2 * SPACE.grid_size + 2
    sd = {"patch_embed_super.proj.weight": r(S, 3, 4, 4), "patch_embed_super.proj.bias": r(S),
          "cls_token": r(1, 1, S), "pos_embed": r(1, N, S), "norm.weight": 1 + r(S), "norm.bias": r(S),
          "head.weight": r(5, S), "head.bias": r(5)}
    for i in range(3):
        p = f"blocks.{i}."
        sd |= {p + "attn.qkv.weight": r(3 * Q, S), p + "attn.qkv.bias": r(3 * Q), p + "attn.proj.weight": r(S, Q),
               p + "attn.proj.bias": r(S), p + "attn_layer_norm.weight": 1 + r(S), p + "attn_layer_norm.bias": r(S),
               p + "ffn_layer_norm.weight": 1 + r(S), p + "ffn_layer_norm.bias": r(S), p + "fc1.weight": r(H, S),
               p + "fc1.bias": r(H), p + "fc2.weight": r(S, H), p + "fc2.bias": r(S)}
        for kv in "kv":
            for vh in "vh":
                sd[p + f"attn.rel_pos_embed_{kv}.embeddings_table_{vh}"] = r(rows, 8)
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


def official_forward(sd, x, arch: Arch) -> torch.Tensor:
    """The AutoFormer/PreNAS forward with its own slicing: interleaved qkv rows c, c+3, … < 3Q."""
    E, hd = arch.embed_dim, SPACE.head_dim
    ln = lambda t, k: F.layer_norm(t, (E,), sd[k + ".weight"][:E], sd[k + ".bias"][:E], 1e-5)
    x = F.conv2d(x, sd["patch_embed_super.proj.weight"][:E], sd["patch_embed_super.proj.bias"][:E], stride=4)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"][..., :E].expand(len(x), -1, -1), x], 1) + sd["pos_embed"][..., :E]
    B, N, _ = x.shape
    fv, fh = autoformer_index(N, SPACE.grid_size)
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


def test_mapping_preserves_every_subnet(tmp_path):
    sd = official_state()
    torch.save({"model": sd, "epoch": 499}, tmp_path / "supernet.pth")
    preferred = {str(k): [{"layer_num": a.depth, "embed_dim": [a.embed_dim] * a.depth,
                           "num_heads": list(a.num_heads), "mlp_ratio": list(a.mlp_ratios), "num_params": 0.0}]
                 for k, a in enumerate(ARCHS)}
    (tmp_path / "cands.json").write_text(json.dumps(preferred))
    spec = tmp_path / "space.yaml"
    SPACE.save(spec)
    run = subprocess.run([sys.executable, "-m", "zoo", "import-official", "--checkpoint",
                          str(tmp_path / "supernet.pth"), "--space", str(spec), "--preferred",
                          str(tmp_path / "cands.json"), "--out", str(tmp_path / "z")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    zoo = Zoo.load(tmp_path / "z")
    assert [e.arch for e in zoo.entries] == ARCHS
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for arch in ARCHS:
            assert (zoo.subnet(arch)(x) - official_forward(sd, x, arch)).abs().max().item() <= 1e-5


def test_qkv_rows_are_deinterleaved():
    t = torch.arange(12.0)
    out = official_to_prezoo({"blocks.0.attn.qkv.bias": t})["blocks.0.attn.qkv.bias"]
    assert out.tolist() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]


def test_unsafe_or_mismatched_checkpoints_are_refused(tmp_path):
    import argparse

    from zoo.official import import_official

    # official checkpoints carry their argparse.Namespace: not loadable with weights_only=True
    torch.save({"model": official_state(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="could not be loaded safely"):
        import_official(str(tmp_path / "pickled.pth"), SPACE, "x.json", str(tmp_path / "z"), "z")
    sd = official_state()
    sd.pop("head.bias")
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \['head.bias'\]"):
        import_official(str(tmp_path / "partial.pth"), SPACE, "x.json", str(tmp_path / "z"), "z")
