"""Shared test helpers: hypothesis strategies over architectures of a search space, the test zoo, the HTTP client."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.hub_server import LocalHub

# One local Hub for the session, set up before anything imports huggingface_hub (it reads endpoint, home and token
# at import): hub tests talk only to 127.0.0.1 and never see the user's cache, token or offline setting.
# (Walrus assignments keep this block to os.environ statements, which may precede imports.)
os.environ["HF_ENDPOINT"] = (_LOCAL_HUB := LocalHub(token="test-admin-token")).start()
os.environ["HF_HOME"] = (_HF_HOME := tempfile.TemporaryDirectory(prefix="prezoo-hf-home-")).name  # gone at exit
os.environ.update(HF_HUB_CACHE=os.path.join(_HF_HOME.name, "hub"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0")
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
os.environ.pop("HF_TOKEN_PATH", None)

import httpx
import pytest
import torch
from hypothesis import strategies as st

from tests.zoo_fixtures import make_zoo
from zoo import Arch, SearchSpace, Zoo

torch.set_num_threads(min(2, os.cpu_count() or 1))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch at `n` CPU threads for a while, then as before: on a busy 2-core box a tiny model's step at 2 threads
    mostly waits (100x slower, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """A module at one torch thread (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`), the rest of the
    session at its own."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    """A small real zoo (tests/zoo_fixtures.py: a random `mini` supernet, 4 entries), one per test module."""
    return make_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def zoo(zoo_dir) -> Zoo:
    return Zoo.load(zoo_dir)


@pytest.fixture
def client(live) -> Iterator[httpx.Client]:
    """HTTP to the module's `live` server (test_server, test_family_serving; modules with other clients override)."""
    with httpx.Client(base_url=live.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def local_hub() -> LocalHub:
    """The session's local Hub (HF_ENDPOINT points at it); writes need the token "test-admin-token"."""
    return _LOCAL_HUB


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


def eb_losses(online, ema, step, steps: int) -> list[float]:
    """The losses of `steps` optimiser steps of a BossNAS net pair (SGD lr 0.1, momentum 0.9; zero gradients
    dropped; the EMA target, if any, following at 0.99): `step(online, ema)` runs one and returns its loss."""
    from training.bossnas import drop_zero_grads, ema_update

    online.train()
    if ema is not None:
        ema.train()
    opt = torch.optim.SGD(online.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        losses.append(step(online, ema))
        drop_zero_grads(online)
        opt.step()
        if ema is not None:
            ema_update(ema, online, 0.99)
    return losses
