"""The published PreNAS preferred sets (`tinyvision/PreNAS:interval_cands/*.json`), as data.

Each entry: bucket upper edge (M params), the architecture, and the published parameter count
(M, 3 decimals) and dense-matmul GMACs at 197 tokens with relative position (spec §5, F*).
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass

from zoo.families.vit.arch import ViTArch
from zoo.io import printable


@dataclass(frozen=True)
class OfficialEntry:
    bucket: int
    arch: ViTArch
    params_m: float
    gmacs: float


def _e(bucket: int, E: int, heads: list[int], ratios: list[float], params_m: float, gmacs: float):
    return OfficialEntry(bucket, ViTArch(E, len(heads), tuple(heads), tuple(ratios)), params_m, gmacs)


OFFICIAL_PREFERRED: dict[str, list[OfficialEntry]] = {
    "autoformer-tiny": [
        _e(6, 192, [4, 4, 4, 4, 3, 3, 3, 3, 3, 4, 3, 4], [4, 4, 4, 4, 4, 3.5, 3.5, 4, 4, 3.5, 4, 4], 5.995, 1.53),
        _e(7, 216, [4, 4, 4, 4, 4, 3, 3, 3, 4, 4, 3, 4], [4, 3.5, 4] + [3.5] * 9, 6.997, 1.74),
        _e(8, 240, [3] * 12, [4, 3.5, 4, 4, 3.5, 3.5, 3.5, 4, 4, 3.5, 4, 3.5], 7.997, 1.85),
        _e(9, 240, [4] * 12, [4, 4, 4, 4, 4, 3.5, 4, 4, 4, 3.5, 4, 4], 8.967, 2.16),
        _e(10, 240, [4, 4, 4, 4, 4, 3, 3, 3, 4, 4, 3, 4, 3, 4],
           [4, 4, 4, 4, 4, 3.5, 3.5, 4, 4, 3.5, 4, 3.5, 4, 4], 9.978, 2.39),
        _e(11, 240, [4] * 14, [4] * 14, 10.517, 2.54),
    ],
    "autoformer-small": [
        _e(18, 320, [7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 5, 6, 5],
           [4, 4, 3.5, 4, 3.5, 4, 4, 3.5, 4, 4, 3.5, 4, 4], 17.991, 4.28),
        _e(23, 384, [7, 7, 7, 7, 5, 7, 7, 5, 6, 5, 5, 6, 5],
           [4, 4, 3.5, 4, 3.5, 4, 3.5, 3.5, 4, 4, 3, 4, 3.5], 22.990, 5.19),
        _e(28, 448, [7, 7, 7, 7, 5, 7, 7, 5, 6, 5, 5, 6, 5],
           [4, 4, 3, 4, 3, 3.5, 3, 3, 4, 3, 3, 4, 3], 27.976, 6.16),
        _e(33, 448, [7, 7, 7, 7, 7, 7, 7, 7, 5, 7, 5, 6, 5, 7],
           [4, 4, 3.5, 4, 3.5, 4, 4, 3.5, 4, 4, 3.5, 4, 4, 3.5], 32.982, 7.26),
    ],
    "autoformer-base": [
        _e(42, 528, [9] * 14, [3] * 12 + [3.5, 3], 41.967, 9.36),
        _e(54, 576, [9, 9, 10, 9, 9, 10, 9, 9, 9, 9, 9, 9, 10, 9],
           [3.5, 4, 3.5, 3.5, 3.5, 4, 3.5, 3.5, 3.5, 3.5, 4, 3, 3.5, 4], 53.876, 11.72),
        _e(66, 624, [9, 10, 10, 9, 9, 10, 10, 9, 10, 9, 9, 9, 10, 10], [4, 4, 3.5] + [4] * 11, 65.916, 14.12),
    ],
}

# PreNAS-Ti / S / B: the 6M, 23M and 54M buckets.
PRENAS_MODELS = {"PreNAS-Ti": ("autoformer-tiny", 6), "PreNAS-S": ("autoformer-small", 23),
                 "PreNAS-B": ("autoformer-base", 54)}


# -- importing official AutoFormer/PreNAS supernet checkpoints -------------------------------------
# Their key names -> ours (timm's). Their qkv rows are interleaved (row 3i+c is channel i of q, k
# or v); ours are [q; k; v]. Everything else is the same tensor under another name.
_RENAMES = (("patch_embed_super.proj.", "patch_embed.proj."), (".attn_layer_norm.", ".norm1."),
            (".ffn_layer_norm.", ".norm2."), (".fc1.", ".mlp.fc1."), (".fc2.", ".mlp.fc2."),
            (".rel_pos_embed_k.embeddings_table_", ".rel_pos_k.table_"),
            (".rel_pos_embed_v.embeddings_table_", ".rel_pos_v.table_"))


def official_to_prezoo(state: dict) -> dict:
    """An official supernet state dict in PreZoo's layout (pure renames + qkv de-interleaving)."""
    import torch

    out = {}
    for key, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"official checkpoint entry '{key}' is a {type(t).__name__}, not a tensor")
        name = key[len("module."):] if key.startswith("module.") else key
        for old, new in _RENAMES:
            name = name.replace(old, new)
        if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            if t.shape[0] % 3:
                raise ValueError(f"official '{key}' has {t.shape[0]} rows, not a multiple of 3")
            t = torch.cat([t[0::3], t[1::3], t[2::3]])
        out[name] = t
    return out


def parse_official_preferred(doc: dict) -> list[ViTArch]:
    """Archs of an official `interval_cands/*.json` ({bucket: [{layer_num, embed_dim, num_heads, mlp_ratio}]})."""
    archs = []
    for bucket, cands in doc.items():
        for c in cands:
            try:
                embed = set(c["embed_dim"])
                if len(embed) != 1:
                    raise ValueError(f"per-layer embed dims {sorted(embed)} are not supported")
                archs.append(ViTArch(embed.pop(), int(c["layer_num"]), tuple(c["num_heads"]),
                                  tuple(float(r) for r in c["mlp_ratio"])))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"official preferred entry in bucket {bucket} is malformed: {e}") from e
    return archs


# What the official training script pickles beside tensors and containers: its command line (`args`).
OFFICIAL_CHECKPOINT_GLOBALS = [argparse.Namespace]


def load_official_checkpoint(checkpoint: str) -> dict:
    """The weights of a checkpoint as the official script saves it ({"model", "optimizer", ..., "args"}) or of a
    plain state dict. Unpickled with weights_only=True, allowing argparse.Namespace and nothing else: any other
    pickled object is refused, never constructed."""
    import torch

    try:
        with torch.serialization.safe_globals(OFFICIAL_CHECKPOINT_GLOBALS):
            ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{checkpoint} could not be loaded safely (weights_only=True): {load_refusal(e)}. Re-save "
                         f"its weights as a plain state dict of tensors, e.g. torch.save(ckpt['model'], path)") from e
    state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} holds a {type(state).__name__}, not a state dict or a dict with 'model'")
    return state


def load_refusal(e: Exception) -> str:
    """Why torch.load refused, in one line: torch's message spans a dozen lines with terminal styling, its own
    reason last (before a pointer to the docs) when unpickling refused, first otherwise (e.g. a truncated file)."""
    if refused := re.search(r"GLOBAL ([\w.]+)", str(e)):
        return f"it holds a pickled {refused[1]}; only tensors, containers and argparse.Namespace are accepted"
    lines = [line for line in str(e).splitlines() if line.strip() and not line.startswith("Check the documentation")]
    reason = (lines[-1] if isinstance(e, pickle.UnpicklingError) else lines[0]) if lines else type(e).__name__
    return printable(reason.strip().rstrip("."))


def import_official(checkpoint: str, space, preferred: str, out: str, name: str, labels: list[str] | None = None):
    """Write a zoo from an official supernet checkpoint (.pth) and its preferred-set JSON."""
    import dataclasses
    import json
    from pathlib import Path

    from zoo.families.vit.cost import flops, params
    from zoo.families.vit.supernet import ViTSupernet
    from zoo.store import ZooEntry, write_zoo

    state = official_to_prezoo(load_official_checkpoint(checkpoint))
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    if depth < space.super_depth:  # e.g. the trained Base supernet has 14 blocks, its search space 16
        space = dataclasses.replace(space, name=f"{space.name}-d{depth}", super_depth=depth,
                                    depths=tuple(d for d in space.depths if d <= depth))
    model = ViTSupernet(space)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{checkpoint} does not fit space {space.name}: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shapes {[(k, tuple(state[k].shape)) for k in wrong[:4]]}")
    archs = parse_official_preferred(json.loads(Path(preferred).read_text()))
    entries = [ZooEntry(space.validate(a), params(space, a), flops(space, a)) for a in archs]
    classes = labels or [f"class_{i}" for i in range(space.num_classes)]
    preprocessing = {"img_size": space.img_size, "in_chans": space.in_chans, "crop_pct": 0.875,
                     "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    return write_zoo(out, name=name, space=space, state=state, entries=entries, classes=classes,
                     preprocessing=preprocessing, source=f"official checkpoint {Path(checkpoint).name}",
                     eval_protocol="not measured here (official: ImageNet val, 224px, single crop)")
