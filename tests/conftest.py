"""Shared test helpers: hypothesis strategies over architectures of a search space."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the internet

import pytest
import torch
from hypothesis import strategies as st

from zoo import Arch, SearchSpace

torch.set_num_threads(min(2, os.cpu_count() or 1))


@st.composite
def archs(draw, space: SearchSpace) -> Arch:
    depth = draw(st.sampled_from(space.depths))
    return Arch(
        embed_dim=draw(st.sampled_from(space.embed_dims)),
        depth=depth,
        num_heads=tuple(draw(st.lists(st.sampled_from(space.num_heads), min_size=depth, max_size=depth))),
        mlp_ratios=tuple(draw(st.lists(st.sampled_from(space.mlp_ratios), min_size=depth, max_size=depth))),
    )


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    """A very small space (2 choices each) with relative position, for fast exhaustive checks."""
    return SearchSpace(name="test-tiny", embed_dims=(16, 24), depths=(2, 3), num_heads=(1, 2),
                       mlp_ratios=(1.5, 2.0), head_dim=8, patch_size=4, img_size=16, in_chans=3,
                       num_classes=5, rel_pos=True, pool="avg")
