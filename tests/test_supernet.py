"""Weight-sharing supernet: slicing, extraction, thread safety, and timm's layout."""

from __future__ import annotations

import threading

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer

from tests.conftest import archs
from zoo import BUILTIN_SPACES, Arch, ViT, ViTSupernet

SPACES = list(BUILTIN_SPACES.values())


@pytest.fixture(scope="module")
def supernets():
    """One randomly initialised supernet per built-in space, built lazily."""
    cache: dict[str, ViTSupernet] = {}

    def get(space):
        if space.name not in cache:
            torch.manual_seed(0)
            cache[space.name] = ViTSupernet(space).eval()
        return cache[space.name]

    return get


def _input(space, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, space.in_chans, space.img_size, space.img_size, generator=g)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_extracted_subnet_equals_sliced_supernet(supernets, space, data):
    supernet = supernets(space)
    arch = data.draw(archs(space))
    sub = supernet.extract(arch)
    assert not sub.training and type(sub) is ViT
    x = _input(space, batch=1 if space.img_size > 32 else 4)
    with torch.no_grad():
        assert (supernet(x, arch) - sub(x)).abs().max().item() <= 1e-5
    # copies, not views: changing the subnet leaves the supernet alone
    for p_sub in sub.parameters():
        assert all(p_sub.data_ptr() != p.data_ptr() for p in supernet.parameters())


def test_extract_copies_weights(supernets):
    space = BUILTIN_SPACES["mini"]
    supernet = supernets(space)
    before = supernet.head.weight.clone()
    sub = supernet.extract(space.largest_arch())
    with torch.no_grad():
        sub.head.weight.add_(1.0)
    assert torch.equal(supernet.head.weight, before)


def test_rel_pos_space_extract(tiny_space):
    supernet = ViTSupernet(tiny_space).eval()
    x = _input(tiny_space)
    for arch in (tiny_space.smallest_arch(), tiny_space.largest_arch(),
                 Arch(24, 3, (2, 1, 2), (1.5, 2.0, 1.5))):
        with torch.no_grad():
            assert torch.allclose(supernet(x, arch), supernet.extract(arch)(x), atol=1e-6)


def test_invalid_arch_is_rejected_by_supernet(supernets):
    supernet = supernets(BUILTIN_SPACES["mini"])
    with pytest.raises(ValueError, match="embed_dim 72"):
        supernet(_input(supernet.space), Arch(72, 4, (2,) * 4, (2,) * 4))
    with pytest.raises(ValueError, match="depth 7"):
        supernet.extract(Arch(64, 7, (2,) * 7, (2,) * 7))


def test_two_threads_run_two_archs_on_one_supernet(supernets):
    space = BUILTIN_SPACES["mini"]
    supernet = supernets(space)
    a, b = space.smallest_arch(), space.largest_arch()
    x = _input(space, batch=8)
    with torch.no_grad():
        want = {a: supernet(x, a), b: supernet(x, b)}
    errors, barrier = [], threading.Barrier(2)

    def run(arch):
        barrier.wait()
        for _ in range(20):
            with torch.no_grad():
                if not torch.equal(supernet(x, arch), want[arch]):
                    errors.append(arch.id)

    threads = [threading.Thread(target=run, args=(arch,)) for arch in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_drop_path_only_in_training():
    space = BUILTIN_SPACES["mini"]
    torch.manual_seed(0)
    supernet = ViTSupernet(space, drop_path_rate=0.5)
    x, arch = _input(space, batch=16), space.largest_arch()
    supernet.train()
    assert not torch.equal(supernet(x, arch), supernet(x, arch))  # stochastic depth is active
    supernet.eval()
    assert torch.equal(supernet(x, arch), supernet(x, arch))


def test_gradients_reach_only_the_sliced_weights():
    space = BUILTIN_SPACES["mini"]
    supernet = ViTSupernet(space)
    arch = space.smallest_arch()
    supernet(_input(space), arch).sum().backward()
    fc1 = supernet.blocks[0].mlp.fc1.weight.grad
    hidden = arch.mlp_dim(0)
    assert fc1[:hidden, :arch.embed_dim].abs().sum() > 0
    assert fc1[hidden:].abs().sum() == 0 and fc1[:, arch.embed_dim:].abs().sum() == 0
    assert supernet.blocks[arch.depth].mlp.fc1.weight.grad is None  # deeper blocks unused


class _TimmAttention(Attention):
    """timm's Attention with our fixed head width (timm's ViT otherwise uses embed / heads)."""

    def __init__(self, dim, **kwargs):
        super().__init__(dim, attn_head_dim=BUILTIN_SPACES["mini"].head_dim, **kwargs)


@pytest.mark.parametrize("embed, heads, ratio", [(64, 4, 2.0), (96, 3, 4.0), (80, 2, 3.0)])
def test_uniform_subnet_loads_into_timm_vision_transformer(supernets, embed, heads, ratio):
    """The proof that our layout is the ecosystem's: timm's ViT, same weights, same outputs."""
    space = BUILTIN_SPACES["mini"]
    arch = Arch(embed, 5, (heads,) * 5, (ratio,) * 5)
    sub = supernets(space).extract(arch)
    kwargs = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=embed, depth=5,
                  num_heads=heads, mlp_ratio=ratio, qkv_bias=True, class_token=True,
                  global_pool="avg", fc_norm=False)
    if heads * space.head_dim != embed:
        kwargs["attn_layer"] = _TimmAttention
    model = VisionTransformer(**kwargs).eval()
    model.load_state_dict(sub.state_dict(), strict=True)
    x = _input(space, batch=4)
    with torch.no_grad():
        assert (model(x) - sub(x)).abs().max().item() <= 1e-5
    assert isinstance(model, timm.models.VisionTransformer)
