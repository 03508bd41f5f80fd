"""The closed-form cost model against real modules and against the official PreNAS numbers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import archs
from zoo import BUILTIN_SPACES, ViT, ViTSupernet, cost_range, flops, params
from zoo.official import OFFICIAL_PREFERRED, PRENAS_MODELS

SPACES = list(BUILTIN_SPACES.values())


def counted_macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """MACs as torch's FlopCounterMode sees them. The MATH SDPA backend, because on CPU the fused
    kernel has no FLOP formula and attention would be silently dropped."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2


@pytest.fixture(scope="module")
def mini_supernet():
    torch.manual_seed(0)
    return ViTSupernet(BUILTIN_SPACES["mini"]).eval()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_mini_params_and_flops_match_extracted_subnet(mini_supernet, data):
    space = mini_supernet.space
    arch = data.draw(archs(space))
    sub = mini_supernet.extract(arch)
    assert params(space, arch) == sum(p.numel() for p in sub.parameters())
    x = torch.randn(1, space.in_chans, space.img_size, space.img_size)
    assert flops(space, arch) == pytest.approx(counted_macs(sub, x), rel=0.01)


@pytest.mark.parametrize("space", [s for s in SPACES if s.name != "mini"], ids=lambda s: s.name)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_autoformer_params_and_flops_match_module(space, data):
    """On the meta device: shapes and FLOPs without computing anything (224² models are big)."""
    arch = data.draw(archs(space))
    with torch.device("meta"):
        model = ViT(space, arch)
        x = torch.empty(1, space.in_chans, space.img_size, space.img_size)
    assert params(space, arch) == sum(p.numel() for p in model.parameters())
    assert flops(space, arch) == pytest.approx(counted_macs(model, x), rel=0.01)


def test_flops_are_exact_on_relative_position_space(tiny_space):
    """Relative position adds the q·r_kᵀ and attn·r_v matmuls; the counter sees them too."""
    for arch in (tiny_space.smallest_arch(), tiny_space.largest_arch()):
        model = ViT(tiny_space, arch).eval()
        x = torch.randn(1, 3, tiny_space.img_size, tiny_space.img_size)
        assert flops(tiny_space, arch) == counted_macs(model, x)


@pytest.mark.parametrize("space_name", list(OFFICIAL_PREFERRED))
def test_official_preferred_sets_reproduce_published_params_and_flops(space_name):
    space = BUILTIN_SPACES[space_name]
    for entry in OFFICIAL_PREFERRED[space_name]:
        space.validate(entry.arch)
        assert round(params(space, entry.arch) / 1e6, 3) == entry.params_m, entry.bucket
        assert round(flops(space, entry.arch) / 1e9, 2) == entry.gmacs, entry.bucket


def test_prenas_ti_s_b_exact_counts():
    got = {}
    for model, (space_name, bucket) in PRENAS_MODELS.items():
        entry = next(e for e in OFFICIAL_PREFERRED[space_name] if e.bucket == bucket)
        got[model] = params(BUILTIN_SPACES[space_name], entry.arch)
    assert got == {"PreNAS-Ti": 5_994_760, "PreNAS-S": 22_989_928, "PreNAS-B": 53_876_104}


def test_param_ranges_match_paper_table_1():
    ranges = {s.name: tuple(round(v / 1e6, 3) for v in cost_range(s)[0]) for s in SPACES}
    assert ranges["autoformer-tiny"] == (5.366, 10.517)
    assert ranges["autoformer-small"] == (14.093, 34.790)  # code's depth >= 13
    assert ranges["autoformer-base"] == (41.688, 76.882)  # code's heads >= 9
