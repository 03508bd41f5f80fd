"""Per-layer weight precision of a standalone subnet: the bit widths ONNX Runtime's CPU path serves from a file, the
per-output-channel symmetric quantizer, the bytes each choice costs, and the precision map (layer name -> bits).

Here in `zoo` because both sides use it and neither may import the other: the search (`training.edmips`) trains
through `fake_quantize` and prices with `weight_bytes`; the export (`export.mixed`) writes `quantize`'s integers
of the `folded` model (each conv's BatchNorm folded into it), which the search's unfolded weights equal up to a
per-channel factor, so the file computes what the search evaluated. Family-agnostic: a layer is any Conv2d or Linear
of the module, named as `named_modules` names it; the rest of the model (biases, norms, embeddings) stays fp32.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from zoo.io import atomic_write_text, quote, read_versioned_json

# bits -> how the file stores a weight: int4/int8 as DequantizeLinear of packed integers (int4 needs opset 21),
# fp16 as a Cast of float16, fp32 as is (measured in tests/test_edmips.py with onnxruntime 1.32's CPU provider)
BITS = (4, 8, 16, 32)
STORAGE = {4: "int4", 8: "int8", 16: "float16", 32: "float32"}
SCALE_BYTES = 4  # one float32 scale per output channel for the integer choices; symmetric, so no zero point
KIND, VERSION = "prezoo.precision", 1
MAX_LAYERS = 10_000


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear of `model` by module name, in module order: the layers a precision map covers."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def qmax(bits: int) -> int:
    """The largest integer of a symmetric `bits`-wide grid (int4: ±7, int8: ±127)."""
    return 2 ** (bits - 1) - 1


def scales(w: Tensor, bits: int) -> Tensor:
    """Per-output-channel (axis 0) scale: the channel's largest |weight| maps to qmax; an all-zero channel gets 1."""
    amax = w.detach().abs().flatten(1).amax(1)
    return torch.where(amax > 0, amax / qmax(bits), torch.ones_like(amax)).float()


def quantize(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """(int8 tensor of integers in [-qmax, qmax], float32 scale per output channel) of an integer choice."""
    s = scales(w, bits)
    q = torch.clamp(torch.round(w.detach().float() / _along0(s, w)), -qmax(bits), qmax(bits))
    return q.to(torch.int8), s


def fake_quantize(w: Tensor, bits: int) -> Tensor:
    """`w` as the file at `bits` holds it (float32 in, float32 out); the gradient passes straight through."""
    if bits == 32:
        return w
    if bits == 16:
        stored = w.detach().half().float()
    else:
        q, s = quantize(w, bits)
        stored = q.float() * _along0(s, w)
    return w + (stored - w).detach()


def _along0(s: Tensor, w: Tensor) -> Tensor:
    return s.reshape(-1, *([1] * (w.dim() - 1)))


def weight_bytes(shape: tuple[int, ...] | torch.Size, bits: int) -> int:
    """Bytes the file spends on one layer's weight at `bits`: packed values (int4: two per byte) plus, for the
    integer choices, one float32 scale per output channel."""
    n = int(torch.Size(shape).numel())
    return (n * bits + 7) // 8 + (shape[0] * SCALE_BYTES if bits <= 8 else 0)


def fixed_bytes(model: nn.Module) -> int:
    """float32 bytes of every floating-point tensor of the `folded` model's state dict outside the quantizable layers'
    weights (biases, norms, embeddings, the BatchNorms no conv absorbs): what every precision map pays alike."""
    model = folded(model)
    weights = {f"{name}.weight" for name in quantizable_layers(model)}
    return sum(4 * t.numel() for k, t in model.state_dict().items() if k not in weights and t.is_floating_point())


def folded(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with each BatchNorm that reads a Conv2d's output folded into that conv (weight
    scaled per output channel, bias shifted) and replaced by an Identity: the form a file stores, since ONNX Runtime
    folds a BatchNorm only into a conv whose weight is a constant, which a DequantizeLinear output is not. Per-output-
    channel symmetric scales make Q(a·W) = a·Q(W), so folding moves no weight to another grid point. ValueError when
    the copy computes anything else than `model` (a conv's output read besides by its BatchNorm)."""
    model = copy.deepcopy(model).eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for conv_name, bn_name in _conv_batch_norms(twin):
            conv, bn = twin.get_submodule(conv_name), twin.get_submodule(bn_name)
            a = (bn.weight if bn.affine else 1) / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0) - bn.running_mean * a
            conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * a + shift)
            conv.weight.mul_(a.reshape(-1, *([1] * (conv.weight.dim() - 1))))
            parent, _, child = bn_name.rpartition(".")
            setattr(twin.get_submodule(parent), child, nn.Identity())
        x = torch.randn(2, model.space.in_chans, model.space.img_size, model.space.img_size,
                        generator=torch.Generator().manual_seed(0))
        if not torch.allclose(twin(x), model(x), rtol=1e-4, atol=1e-4):
            raise ValueError(f"{type(model).__name__}: folding its BatchNorms into their convs changes its output")
    return twin


def _conv_batch_norms(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, BatchNorm) module names where the BatchNorm (with running statistics) reads the conv's output, found by
    one forward pass of a zero image."""
    made: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def produced(name: str) -> Callable:
        def hook(_module, _args, out) -> None:
            made.setdefault(id(out), (name, out))  # the tensor is kept: its id stays its own
        return hook

    def consumed(name: str) -> Callable:
        def hook(_module, args) -> None:
            if id(args[0]) in made:
                pairs.append((made[id(args[0])][0], name))
        return hook

    hooks = [m.register_forward_hook(produced(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(consumed(n)) for n, m in model.named_modules()
              if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    try:
        model(torch.zeros(1, model.space.in_chans, model.space.img_size, model.space.img_size))
    finally:
        for hook in hooks:
            hook.remove()
    return pairs


def model_bytes(model: nn.Module, bits: Mapping[str, int]) -> int:
    """Tensor bytes of `model` stored at `bits` per layer (a checked map): the fixed part plus each layer's weight."""
    layers = quantizable_layers(model)
    return fixed_bytes(model) + sum(weight_bytes(layers[name].weight.shape, b) for name, b in bits.items())


def uniform(model: nn.Module, bits: int) -> dict[str, int]:
    """Every layer at `bits`."""
    return check_map(model, {name: bits for name in quantizable_layers(model)})


def check_map(model: nn.Module, bits: object) -> dict[str, int]:
    """`bits` as a precision map of `model`: one of `BITS` for every quantizable layer, nothing else. ValueError
    naming what is wrong (an unknown or missing layer, a width ONNX Runtime does not serve) otherwise."""
    if not isinstance(bits, dict):
        raise ValueError(f"a precision map is a JSON object of layer name -> bits, got {quote(bits)}")
    layers = quantizable_layers(model)
    if unknown := [k for k in bits if k not in layers]:
        raise ValueError(f"precision map names {len(unknown)} layer(s) this model lacks, e.g. {quote(unknown[0])}; "
                         f"its Conv2d/Linear layers are {_some(layers)}")
    if missing := [k for k in layers if k not in bits]:
        raise ValueError(f"precision map lacks {len(missing)} of the model's {len(layers)} layers, e.g. "
                         f"{quote(missing[0])}: every Conv2d/Linear needs its bits")
    for name, b in bits.items():
        if isinstance(b, bool) or b not in BITS:
            raise ValueError(f"layer {quote(name)}: bits must be one of {', '.join(map(str, BITS))} (what ONNX "
                             f"Runtime's CPU path serves from a file), got {quote(b)}")
    return {name: int(bits[name]) for name in layers}


def _some(layers: Mapping[str, nn.Module], n: int = 4) -> str:
    names = list(layers)
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def write_map(path: str | Path, bits: Mapping[str, int], **about: object) -> Path:
    """The precision map as a small JSON file: `layers` (name -> bits) and what it is `about` (entry, bytes ...)."""
    doc = {"kind": KIND, "schema_version": VERSION, **about, "layers": dict(bits)}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return Path(path)


def read_map(path: str | Path, model: nn.Module) -> tuple[dict[str, int], dict]:
    """(the checked layer map, the whole document) of a precision map file, for `model`."""
    doc = read_versioned_json(path, KIND, VERSION)
    layers = doc.get("layers")
    if isinstance(layers, dict) and len(layers) > MAX_LAYERS:
        raise ValueError(f"{path}: {len(layers)} layers is over {MAX_LAYERS:,}: not a precision map")
    try:
        return check_map(model, layers), doc
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


@contextmanager
def substituted(model: nn.Module, weights: Callable[[], dict[str, Tensor]]) -> Iterator[nn.Module]:
    """`model` whose forward sees `weights()` (layer name -> tensor, made anew at each call, inside it: autograd
    and the ONNX tracer record how they are made) in place of those layers' weights. Works for modules that read
    their parameters through the module (`layer.weight`, `named_parameters`), as both families' models do; the
    originals are back after every call and on leaving."""
    layers = quantizable_layers(model)
    originals = {name: m._parameters["weight"] for name, m in layers.items()}

    def swap(_module, _args):
        for name, w in weights().items():
            layers[name]._parameters["weight"] = w

    def restore(*_):
        for name, w in originals.items():
            layers[name]._parameters["weight"] = w

    hooks = [model.register_forward_pre_hook(swap), model.register_forward_hook(restore)]
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        restore()


def quantized(model: nn.Module, bits: Mapping[str, int]):
    """`model` computing with each layer's weight as the file at `bits` holds it (a `substituted` context)."""
    layers = quantizable_layers(model)
    return substituted(model, lambda: {name: fake_quantize(layers[name].weight, b) for name, b in bits.items()})
