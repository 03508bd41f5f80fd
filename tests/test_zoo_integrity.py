"""A zoo is checked whole when it loads (issue 21): every tensor of its weight file against the module that takes it,
the supernet's and each entry's BatchNorm statistics alike, so that a zoo that loads answers every request.

Each case tampers with one tensor of a copy of the shipped HyTra zoo and records the file's new sha256 in its index,
as a careful forger (or a broken packager) would, so the tamper reaches these checks rather than the checksum's.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from tests.test_hytra_zoo import HYTRA_ZOO
from tests.test_store_schema import Edit, broken, edited, server_refusal
from tests.zoo_fixtures import make_zoo
from zoo import Zoo, ZooError

ENTRY = json.loads((HYTRA_ZOO / "zoo.json").read_text())["entries"][-1]["id"]  # the last: every entry is checked
STATS = f"paths.{ENTRY}."  # the prefix of its BatchNorm statistics


def setting(name: str, value: torch.Tensor) -> Edit:
    return lambda tensors: tensors.update({name: value})


def cast(name: str, dtype: torch.dtype) -> Edit:
    return lambda tensors: tensors.update({name: tensors[name].to(dtype)})


def dropping(prefix: str) -> Edit:
    return lambda tensors: [tensors.pop(name) for name in [n for n in tensors if n.startswith(prefix)]]


def first_set(name: str, value: float) -> Edit:
    return lambda tensors: tensors[name].view(-1)[0].fill_(value)


def sliced(name: str) -> Edit:
    return lambda tensors: tensors.update({name: tensors[name][:-1]})


HALF = torch.zeros(3, dtype=torch.float16)
CASES = {
    # what the modules hold: none missing, none stray, each of its shape
    "a supernet tensor missing": (dropping("stem.0.weight"),
                                  r"tensor 'stem\.0\.weight' of the HyTra supernet of space micro-hytra is missing$"),
    "a stray supernet tensor": (setting("stem.9.weight", HALF),
                                r"tensor 'stem\.9\.weight' is no part of the HyTra supernet of space micro-hytra$"),
    "a supernet tensor of another shape": (sliced("heads.s2.bias"),
                                           r"tensor 'heads\.s2\.bias' of shape \(9,\), the model's is \(10,\)$"),
    "an entry's statistics missing": (dropping(STATS),
                                      rf"entry {ENTRY} has no BatchNorm statistics \(paths\.{ENTRY}\.\*\): a HyTra "
                                      r"path needs its own, recalibrated at packaging$"),
    "a statistics key missing": (dropping(f"{STATS}stem.1.running_var"),
                                 rf"the BatchNorm statistics of entry {ENTRY} do not fit its model: no statistics for "
                                 r"stem\.1\.running_var$"),
    "a stray statistics key": (setting(f"{STATS}layers.9.x.running_mean", HALF),
                               rf"the BatchNorm statistics of entry {ENTRY} do not fit its model: statistics for "
                               r"layers\.9\.x\.running_mean, which the model does not have$"),
    "statistics of another shape": (sliced(f"{STATS}stem.1.running_mean"),
                                    rf"the BatchNorm statistics of entry {ENTRY} do not fit its model: statistics "
                                    r"stem\.1\.running_mean of shape \(\d+,\), the model's is \(\d+,\)$"),
    "statistics of no entry": (setting("paths.hytra-L8-00000000.stem.1.running_mean", HALF),
                               r"tensors paths\.hytra-L8-00000000\.\* are BatchNorm statistics of no entry of the "
                               r"index$"),
    # values a trained BatchNorm cannot hold
    "a negative shared running_var": (first_set("stem.1.running_var", -1.0),
                                      r"tensor 'stem\.1\.running_var' holds a negative BatchNorm variance \(-1\): the "
                                      r"model would answer NaN for any input$"),
    "a negative running_var of an entry": (first_set(f"{STATS}stem.1.running_var", -0.5),
                                           rf"tensor 'paths\.{ENTRY}\.stem\.1\.running_var' holds a negative "
                                           r"BatchNorm variance \(-0\.5\)"),
    "an entry's running mean of 6e4": (first_set(f"{STATS}stem.1.running_mean", 6e4),
                                       rf"tensor 'paths\.{ENTRY}\.stem\.1\.running_mean' holds a BatchNorm running "
                                       r"mean of 60000, beyond ±1024 for unit-scale inputs$"),
    "a shared running mean of -2000": (first_set("stem.1.running_mean", -2000.0),
                                       r"tensor 'stem\.1\.running_mean' holds a BatchNorm running mean of "
                                       r"-2000, beyond"),
    "NaN statistics": (first_set(f"{STATS}stem.1.running_var", float("nan")),
                       rf"tensor 'paths\.{ENTRY}\.stem\.1\.running_var' holds NaN or infinite values$"),
    # exact dtypes: the index's for what the modules compute in floating point, int64 for batch counts
    "a bf16 tensor": (cast("stem.0.weight", torch.bfloat16),
                      r"tensor 'stem\.0\.weight' is torch\.bfloat16, expected torch\.float16 \(the index's "
                      r"weights\.dtype\)$"),
    "an fp32 tensor in an fp16 zoo": (cast("stem.0.weight", torch.float32),
                                      r"tensor 'stem\.0\.weight' is torch\.float32, expected torch\.float16"),
    "an int32 supernet tensor": (cast("heads.s2.bias", torch.int32),
                                 r"tensor 'heads\.s2\.bias' is torch\.int32, expected torch\.float16 \(the index's"),
    "int64 statistics": (cast(f"{STATS}stem.1.running_mean", torch.int64),
                         rf"tensor 'paths\.{ENTRY}\.stem\.1\.running_mean' is torch\.int64, expected torch\.float16"),
    "a bool batch count": (setting(f"{STATS}stem.1.num_batches_tracked", torch.tensor(True)),
                           rf"tensor 'paths\.{ENTRY}\.stem\.1\.num_batches_tracked' is torch\.bool, expected "
                           r"torch\.int64 \(its module's\)$"),
    "a floating-point batch count": (cast("stem.1.num_batches_tracked", torch.float16),
                                     r"tensor 'stem\.1\.num_batches_tracked' is torch\.float16, expected torch\.int64"),
}


@pytest.mark.parametrize("edit, message", CASES.values(), ids=CASES.keys())
def test_a_tampered_weight_file_is_refused_at_load_with_one_line_naming_the_tensor(tmp_path, edit, message):
    folder = broken(HYTRA_ZOO, tmp_path, edited(edit))
    with pytest.raises(ZooError, match=message) as refused:
        Zoo.load(folder)
    assert str(refused.value).startswith(f"{folder / 'supernet.safetensors'}: ")
    assert "\n" not in str(refused.value)


def test_a_vit_zoo_takes_the_dtype_its_index_records(tmp_path):
    folder = broken(make_zoo(tmp_path / "fp32"), tmp_path, edited(cast("head.bias", torch.float16)))
    with pytest.raises(ZooError, match=r"tensor 'head\.bias' is torch\.float16, expected torch\.float32 \(the index's"):
        Zoo.load(folder)


def test_a_zoo_that_loads_has_its_supernet_and_every_entrys_statistics_in_place():
    zoo = Zoo.load(HYTRA_ZOO)
    assert not zoo.supernet.training and next(zoo.supernet.parameters()).dtype == torch.float32
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert all(torch.isfinite(zoo.subnet(entry)(x)).all() for entry in zoo.entries)


def test_what_was_checked_at_load_serves_whatever_happens_to_the_file_later(tmp_path):
    zoo = Zoo.load(shutil.copytree(HYTRA_ZOO, tmp_path / "zoo"))
    checked = zoo.subnet(ENTRY).stem[1].running_var.clone()
    tampered = broken(HYTRA_ZOO, tmp_path / "tampered", edited(first_set(f"{STATS}stem.1.running_var", -1.0)))
    with open(zoo.root / "supernet.safetensors", "r+b") as f:  # in place: the file is memory-mapped while it loads
        f.write((tampered / "supernet.safetensors").read_bytes())
    assert torch.equal(zoo.subnet(ENTRY).stem[1].running_var, checked)


SERVER_CASES = ["a supernet tensor missing", "a statistics key missing", "a negative running_var of an entry",
                "a bf16 tensor"]


@pytest.mark.parametrize("case", SERVER_CASES)
def test_the_server_refuses_a_tampered_zoo_at_start_with_one_line_and_exit_2(tmp_path, case):
    edit, message = CASES[case]
    stderr = server_refusal(broken(HYTRA_ZOO, tmp_path, edited(edit)), tmp_path)
    assert "Traceback" not in stderr and re.search(message, stderr)
