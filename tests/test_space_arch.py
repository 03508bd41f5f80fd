"""Search spaces and architectures: validation, serialisation, ids."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import archs
from zoo import BUILTIN_SPACES, Arch, SearchSpace, get_space

SPACES = list(BUILTIN_SPACES.values())


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_space_file_round_trip(space, suffix, tmp_path):
    path = tmp_path / f"space{suffix}"
    space.save(path)
    loaded = SearchSpace.load(path)
    assert loaded == space and loaded.hash == space.hash
    assert get_space(str(path)) == space


def test_official_spaces_are_exact():
    t, s, b = (BUILTIN_SPACES[f"autoformer-{n}"] for n in ("tiny", "small", "base"))
    assert (t.embed_dims, t.depths, t.num_heads, t.mlp_ratios) == ((192, 216, 240), (12, 13, 14), (3, 4), (3.5, 4))
    assert (s.embed_dims, s.depths, s.num_heads, s.mlp_ratios) == ((320, 384, 448), (13, 14), (5, 6, 7), (3, 3.5, 4))
    assert (b.embed_dims, b.depths, b.num_heads, b.mlp_ratios) == ((528, 576, 624), (14, 15, 16), (9, 10), (3, 3.5, 4))
    assert (t.super_embed_dim, s.super_embed_dim, b.super_embed_dim, b.super_depth) == (256, 448, 640, 16)
    for sp in (t, s, b):
        assert (sp.head_dim, sp.patch_size, sp.img_size, sp.num_classes, sp.rel_pos, sp.pool) == \
            (64, 16, 224, 1000, True, "avg")


@pytest.mark.parametrize("bad, field", [
    (dict(embed_dims=[]), "embed_dims"),
    (dict(depths=[4, 4]), "depths"),
    (dict(num_heads=[2, -1]), "num_heads"),
    (dict(mlp_ratios=["4"]), "mlp_ratios"),
    (dict(pool="max"), "pool"),
    (dict(img_size=30), "img_size"),
    (dict(super_embed_dim=32), "super_embed_dim"),
    (dict(bogus=1), "bogus"),
])
def test_invalid_space_names_the_field(bad, field):
    d = BUILTIN_SPACES["mini"].to_dict() | bad
    with pytest.raises(ValueError, match=field):
        SearchSpace.from_dict(d)


def test_unknown_space_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown search space 'nope'.*mini"):
        get_space("nope")


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_arch_json_round_trip_and_stable_id(space, data):
    arch = data.draw(archs(space))
    space.validate(arch)
    again = Arch.from_json(arch.to_json())
    assert again == arch and hash(again) == hash(arch) and again.id == arch.id
    assert arch.id.startswith(f"e{arch.embed_dim}-d{arch.depth}-") and len(arch.id.split("-")[-1]) == 8
    # isomers share a key; canonical JSON does not depend on how the numbers were typed
    iso = Arch(arch.embed_dim, arch.depth, tuple(reversed(arch.num_heads)), tuple(reversed(arch.mlp_ratios)))
    assert iso.isomer_key == arch.isomer_key
    as_ints = Arch.from_dict(json.loads(arch.to_json()) | {"mlp_ratios": [int(r) if r == int(r) else r
                                                                           for r in arch.mlp_ratios]})
    assert as_ints.to_json() == arch.to_json()


def test_arch_id_is_stable_across_processes():
    """The id is a content hash, not Python's randomised hash(): same in a fresh interpreter."""
    arch = BUILTIN_SPACES["mini"].largest_arch()
    code = "from zoo import BUILTIN_SPACES; print(BUILTIN_SPACES['mini'].largest_arch().id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == arch.id


MINI = BUILTIN_SPACES["mini"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(embed_dim=64, depth=4, num_heads=(2, 2, 2), mlp_ratios=(2,) * 4), "num_heads has 3 values but depth is 4"),
    (dict(embed_dim=64, depth=4, num_heads=(2,) * 4, mlp_ratios=(2,) * 5), "mlp_ratios has 5 values"),
    (dict(embed_dim=-64, depth=4, num_heads=(2,) * 4, mlp_ratios=(2,) * 4), "embed_dim must be a positive int"),
    (dict(embed_dim=64.0, depth=4, num_heads=(2,) * 4, mlp_ratios=(2,) * 4), "embed_dim must be a positive int"),
    (dict(embed_dim=64, depth=True, num_heads=(2,), mlp_ratios=(2,)), "depth must be a positive int"),
    (dict(embed_dim=64, depth=2, num_heads=(2, "3"), mlp_ratios=(2, 2)), r"num_heads\[1\] must be a positive int"),
    (dict(embed_dim=64, depth=2, num_heads=(2, 2), mlp_ratios=(2, 0)), r"mlp_ratios\[1\] must be a positive"),
    (dict(embed_dim=64, depth=2, num_heads="22", mlp_ratios=(2, 2)), "num_heads must be a list"),
])
def test_malformed_arch_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Arch(**kwargs)


@pytest.mark.parametrize("arch, message", [
    (Arch(72, 4, (2,) * 4, (2,) * 4), r"embed_dim 72 is not allowed.*\[64, 80, 96\]"),
    (Arch(64, 7, (2,) * 7, (2,) * 7), r"depth 7 is not allowed.*\[4, 5, 6\]"),
    (Arch(64, 4, (2, 2, 5, 2), (2,) * 4), r"num_heads\[2\] = 5 is not allowed.*\[2, 3, 4\]"),
    (Arch(64, 4, (2,) * 4, (2, 2, 2, 2.5)), r"mlp_ratios\[3\] = 2.5 is not allowed.*\[2.0, 3.0, 4.0\]"),
])
def test_arch_outside_space_names_field_and_choices(arch, message):
    with pytest.raises(ValueError, match=message):
        MINI.validate(arch)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[1, 2]", "must be a mapping"),
    ('{"embed_dim": 64, "depth": 1, "num_heads": [2]}', r"missing \['mlp_ratios'\]"),
])
def test_bad_arch_json(text, message):
    with pytest.raises(ValueError, match=message):
        Arch.from_json(text)


def test_cli_lists_spaces_with_ranges():
    out = subprocess.run([sys.executable, "-m", "zoo"], capture_output=True, text=True, check=True).stdout
    for name in BUILTIN_SPACES:
        assert name in out
    assert "params 5.37M – 10.5M" in out  # autoformer-tiny, the paper's 5.4–10.5M (zoo.budget.human: 3 digits)
    bad = subprocess.run([sys.executable, "-m", "zoo", "spaces", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown search space 'nope'" in bad.stderr and "Traceback" not in bad.stderr
