"""Zero-cost selector: tables equal direct slicing, greedy vs brute force, buckets, output file."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import archs
from training.preferred import Buckets, load_preferred, pick_preferred
from training.select import (
    STEP2_EXCLUDED,
    SelectConfig,
    brute_force_allocation,
    build_tables,
    gaussian_batch,
    gradient_pass,
    greedy_allocations,
    representatives,
    select,
    write_selection,
)
from zoo import BUILTIN_SPACES, Arch, SearchSpace, params, slice_state
from zoo.family import get_family

MINI = BUILTIN_SPACES["mini"]


@pytest.fixture(scope="module")
def mini_grads():
    batch = gaussian_batch(MINI, 32, torch.Generator().manual_seed(0)), None
    return gradient_pass(MINI, seed=0, batch=batch)


@pytest.fixture(scope="module")
def mini_tables(mini_grads):
    return build_tables(MINI, *mini_grads, proxy="snip-normalised")


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_step2_table_score_equals_direct_sum_over_sliced_tensors(mini_grads, mini_tables, data):
    """The tables give any subnet's plain SNIP by arithmetic; check against slicing θ and g."""
    theta, grad = mini_grads
    arch = data.draw(archs(MINI))
    t, g = slice_state(theta, MINI, arch), slice_state(grad, MINI, arch)
    direct = sum(float((t[k] * g[k]).abs().double().sum()) for k in t if not any(x in k for x in STEP2_EXCLUDED))
    e = MINI.embed_dims.index(arch.embed_dim)
    hi = torch.tensor([[MINI.num_heads.index(h) for h in arch.num_heads]])
    ri = torch.tensor([[MINI.mlp_ratios.index(r) for r in arch.mlp_ratios]])
    assert float(mini_tables.step2_scores(e, hi, ri)[0, 0]) == pytest.approx(direct, rel=1e-6)  # float32 sums


def test_step1_tables_are_normalised_prefix_sums(mini_grads, mini_tables):
    theta, grad = mini_grads
    E = max(MINI.embed_dims)
    layer = 2
    name = f"blocks.{layer}.attn.qkv.weight"
    w, gw = theta[name][:, :E].double(), grad[name][:, :E].double()
    s = (w * gw).abs() / (w.abs().sum() * gw.abs().sum())
    for j, h in enumerate(MINI.num_heads):
        Q = h * MINI.head_dim
        rows = torch.cat([torch.arange(c * 64, c * 64 + Q) for c in range(3)])  # super QKV width 64
        assert float(mini_tables.heads[layer, j]) == pytest.approx(float(s[rows].sum()), rel=1e-12)
    assert torch.all(mini_tables.heads.diff(dim=1) >= 0) and torch.all(mini_tables.mlp.diff(dim=1) >= 0)


def test_step1_mlp_normaliser_covers_every_super_row():
    """As the official code: a supernet wider than the largest searched embed (Tiny: 256 vs 240) normalises the MLP
    over all its 4·256 hidden rows, not the ⌊240·4⌋ that the largest searched arch uses."""
    space = SearchSpace(name="wide-super", embed_dims=(16, 24), depths=(2,), num_heads=(1, 2), mlp_ratios=(2.0, 4.0),
                        head_dim=8, patch_size=4, img_size=8, in_chans=1, num_classes=3, rel_pos=False,
                        super_embed_dim=32)
    theta, grad = gradient_pass(space, seed=0, batch=(gaussian_batch(space, 4, torch.Generator().manual_seed(0)), None))
    tables = build_tables(space, theta, grad, proxy="snip-normalised")
    w, g = (x["blocks.1.mlp.fc1.weight"].double() for x in (theta, grad))
    assert w.shape == (128, 32)  # 4 · 32 super rows
    w, g = w[:, :24], g[:, :24]
    s = (w * g).abs() / (w.abs().sum() * g.abs().sum())
    w2, g2 = (x["blocks.1.mlp.fc2.weight"].double()[:24] for x in (theta, grad))
    s2 = (w2 * g2).abs() / (w2.abs().sum() * g2.abs().sum())
    for j, r in enumerate(space.mlp_ratios):
        hidden = int(24 * r)
        want = float(s[:hidden].sum() + s2[:, :hidden].sum())
        assert float(tables.mlp[1, j]) == pytest.approx(want, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(layers=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_greedy_is_exact_for_two_choices(layers, seed):
    prefix = torch.cat([torch.zeros(layers, 1), torch.rand(layers, 1, generator=torch.Generator().manual_seed(seed))],
                       dim=1)
    for total, alloc in enumerate(greedy_allocations(prefix)):
        assert sum(alloc) == total
        _, best = brute_force_allocation(prefix, total)
        assert float(sum(prefix[i, a] for i, a in enumerate(alloc))) == pytest.approx(best)


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_greedy_is_exact_for_three_choices_with_diminishing_gains(layers, seed):
    """Separable concave gains: greedy unit-by-unit allocation is optimal (a classic result)."""
    gains = torch.rand(layers, 2, generator=torch.Generator().manual_seed(seed)).sort(dim=1, descending=True).values
    prefix = torch.cat([torch.zeros(layers, 1), gains.cumsum(dim=1)], dim=1)
    for total, alloc in enumerate(greedy_allocations(prefix)):
        _, best = brute_force_allocation(prefix, total)
        assert float(sum(prefix[i, a] for i, a in enumerate(alloc))) == pytest.approx(best)


def test_representatives_cover_every_isomer_group_once(mini_tables):
    cands = list(representatives(mini_tables))
    # per (E, L): (L·(K_h-1) + 1) head totals x (L·(K_r-1) + 1) ratio totals
    expected = sum((2 * L + 1) ** 2 for L in MINI.depths) * len(MINI.embed_dims)
    assert len(cands) == expected
    keys = {(c.arch.embed_dim, c.arch.depth, sum(c.arch.num_heads), sum(c.arch.mlp_ratios)) for c in cands}
    assert len(keys) == expected
    # the smallest and the largest model are candidates (the official enumeration misses them)
    ids = {c.arch.id for c in cands}
    assert MINI.smallest_arch().id in ids and MINI.largest_arch().id in ids
    for c in cands:
        assert c.params == params(MINI, c.arch)


def test_bucket_edges_and_index():
    b = Buckets(5e6, 12e6, 1e6)
    assert b.count == 7 and b.edges()[0] == (5e6, 6e6) and b.edges()[-1] == (11e6, 12e6)
    assert b.index(5e6) == 0 and b.index(5_999_999) == 0 and b.index(6e6) == 1
    assert b.index(4_999_999) is None and b.index(12e6) is None and b.index(11_999_999) == 6
    assert Buckets(30e6, 70e6, 12e6).edges() == [(30e6, 42e6), (42e6, 54e6), (54e6, 66e6)]  # [66, 70) dropped
    assert Buckets(0.1e6, 0.65e6, 0.05e6).count == 11  # float steps do not lose the last bucket


def test_geometric_buckets():
    b = Buckets(1e4, 1.29e6, ratio=2**0.5)  # the `ladder` default: two buckets per octave
    assert b.count == 14 and b.edges()[0] == (1e4, pytest.approx(14142.1, abs=0.1))
    assert b.edges()[-1][1] == pytest.approx(1.28e6) and all(lo < hi for lo, hi in b.edges())
    assert all(a[1] == b_[0] for a, b_ in itertools.pairwise(b.edges()))  # contiguous, no gaps
    assert b.index(1e4) == 0 and b.index(14142) == 0 and b.index(14143) == 1 and b.index(9_999) is None
    assert b.index(1.28e6 - 1) == 13 and b.index(1.29e6) is None


@pytest.mark.parametrize("kw", [dict(low=5, high=4, width=1), dict(low=0, high=10, width=0),
                                dict(low=0, high=1, width=2), dict(low=-1, high=5, width=1),
                                dict(low=0, high=10, ratio=2), dict(low=1, high=10, ratio=1),
                                dict(low=1, high=10, width=1, ratio=2), dict(low=1, high=10)])
def test_invalid_buckets(kw):
    with pytest.raises(ValueError):
        Buckets(**kw)


def test_empty_buckets_stay_empty_and_top_n(mini_tables):
    cands = list(representatives(mini_tables))
    buckets = Buckets(0.0, 1.2e6, 0.1e6)  # the first and the upper buckets hold nothing
    picked = pick_preferred(cands, buckets, "params", top_n=3)
    assert len(picked) == buckets.count and picked[0] == [] and picked[-1] == []
    for (lo, hi), best in zip(buckets.edges(), picked, strict=True):
        inside = sorted((c.score for c in cands if lo <= c.params < hi), reverse=True)
        assert [c.score for c in best] == inside[:3]


def test_select_is_reproducible_and_writes_a_valid_file(tmp_path):
    cfg = lambda: SelectConfig(MINI, seed=3, batch_size=16, progress=False)
    a, b = select(cfg()), select(cfg())
    assert [c.arch.id for c in a.preferred_archs] == [c.arch.id for c in b.preferred_archs]
    path = write_selection(a, tmp_path)
    space, entries = load_preferred(path)
    assert space == MINI and [e["id"] for e in entries] == [c.arch.id for c in a.preferred_archs]
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1 and doc["selector"]["proxy"] == "snip-normalised"
    assert len(doc["buckets"]) == cfg().buckets.count >= 5 and len(entries) >= 5


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(kind="other"), "not a PreZoo prezoo.preferred file"),
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d["buckets"][-1]["entries"][0].update(id="e96-d6-00000000"), "does not match its arch"),
    (lambda d: d["space"].update(num_classes=11), "space_hash"),
])
def test_load_preferred_rejects_bad_files(tmp_path, mutate, message):
    path = write_selection(select(SelectConfig(MINI, batch_size=8, progress=False)), tmp_path)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        load_preferred(path)
    path.write_text("{truncated")
    with pytest.raises(ValueError, match="cannot read"):
        load_preferred(path)


def test_three_choice_space_on_a_rel_pos_space():
    space = SearchSpace(name="t3", embed_dims=(16,), depths=(3,), num_heads=(1, 2, 3), mlp_ratios=(1.0, 2.0, 3.0),
                        head_dim=8, patch_size=4, img_size=8, in_chans=3, num_classes=4, rel_pos=True)
    sel = select(SelectConfig(space, batch_size=4, progress=False, buckets=Buckets(0, 20_000, 2_000)))
    assert len(sel.candidates) == 7 * 7
    assert all(space.validate(c.arch) for c in sel.candidates)
    assert Arch(16, 3, (3, 3, 3), (3.0, 3.0, 3.0)).id in {c.arch.id for c in sel.candidates}


def test_cli_select_and_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "training", "select", *a], capture_output=True, text=True)
    ok = run("--space", "mini", "--batch-size", "8", "--out", str(tmp_path), "--width", "0.1M")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "preferred.json").is_file() and (tmp_path / "preferred.png").stat().st_size > 10_000
    assert "next: python -m training train" in ok.stdout
    for args, message in ((["--space", "nope"], "unknown search space"),
                          (["--space", "mini", "--width", "0"], "must be a positive"),
                          (["--space", "mini", "--width", "lots"], "must be a number"),
                          (["--space", "mini", "--proxy", "magic"], "invalid choice")):
        bad = run(*args, "--out", str(tmp_path / "bad"))
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_a_preferred_json_of_another_schema_is_named(tmp_path):
    path = tmp_path / "preferred.json"
    for doc in ({"kind": "prezoo.preferred", "schema_version": 1},
                {"kind": "prezoo.preferred", "schema_version": 1, "space": MINI.to_dict(), "space_hash": MINI.hash,
                 "buckets": 3},
                {"kind": "prezoo.preferred", "schema_version": 1, "space": "mini"}):
        path.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=f"^{path}"):
            load_preferred(path)


def test_bucket_flags_fill_in_the_spaces_default_and_name_it(tmp_path, capsys):
    from argparse import Namespace

    from training.__main__ import main, parse_args, select_buckets

    flags = lambda **kw: Namespace(**{"low": None, "high": None, "width": None, "bucket_by": "params", **kw})
    ladder = BUILTIN_SPACES["ladder"]
    assert select_buckets(flags(low=2e4), ladder) == Buckets(2e4, 1.29e6, ratio=2**0.5)  # geometric, as its default
    assert select_buckets(flags(high=0.5e6), MINI) == Buckets(0.1e6, 0.5e6, width=0.05e6)
    assert select_buckets(flags(), MINI) is None
    assert main(["select", "--space", "mini", "--low", "2M", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --low 2M must be below --high 650K (mini's default)\n"
    assert main(["select", "--space", "mini", "--high", "5K", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --low 100K (mini's default) must be below --high 5K\n"
    for flag, value in (("--low", "1e30"), ("--width", "0"), ("--top-n", "0"), ("--batch-size", "nan"),
                        ("--seed", "-1"), ("--out", "")):
        with pytest.raises(SystemExit):
            parse_args(["select", "--space", "mini", flag, value])
        assert capsys.readouterr().err.splitlines()[-1].startswith(f"python -m training select: error: argument {flag}")
    assert not any(tmp_path.iterdir())


def test_select_serves_the_families_that_name_it(tmp_path, capsys):
    """`Family.selectors`: PreNAS's selector works on the ViT's slicing rules; a HyTra space is BossNAS's."""
    from training.__main__ import main

    assert main(["select", "--space", "micro-hytra", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: space micro-hytra is a HyTra space, which `python -m training select` "
                                       "does not serve: its preferred archs come from `python -m training bossnas`\n")
    with pytest.raises(ValueError, match="searches a ViT space, got HyTraSpace"):
        SelectConfig(get_family("hytra").spaces["micro-hytra"])
    assert Buckets.default(get_family("hytra").spaces["micro-hytra"], "params") == Buckets(4e4, 5.6e5, ratio=2**0.5)
    assert not any(tmp_path.iterdir())
