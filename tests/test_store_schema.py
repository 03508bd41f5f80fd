"""The zoo index schema: every malformed `zoo.json` is refused at load with one ZooError naming the field.

Each case breaks one field of a real zoo (tests.zoo_fixtures) on disk and loads it; a few go through
`python -m server`, which must exit 2 with exactly one line; the weight file never leads out of the zoo folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_store import VAL_ACCURACY, validated
from tests.zoo_fixtures import make_zoo
from zoo import SearchSpace, Zoo, ZooError
from zoo.io import MAX_JSON_BYTES, sha256_file
from zoo.store import CHOSEN_ON_TEST, DEFAULT_ZOO

ROOT = Path(__file__).resolve().parent.parent
LATENCY = {"median_ms": 1.5, "p10_ms": 1.2, "p90_ms": 1.9}
Change = Callable[[dict, Path], str | None]  # edits the parsed index (or returns its new text); gets the folder


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return make_zoo(tmp_path_factory.mktemp("zoo"))


def _keys(path: str) -> list[str | int]:
    return [int(k) if k.isdigit() else k for k in path.split(".")]


def setting(path: str, value) -> Change:
    """Set the field at a dotted path ('entries.0.top1') of the index."""
    def change(doc: dict, folder: Path) -> None:
        *parents, last = _keys(path)
        for key in parents:
            doc = doc[key]
        doc[last] = value
    return change


def removing(path: str) -> Change:
    def change(doc: dict, folder: Path) -> None:
        *parents, last = _keys(path)
        for key in parents:
            doc = doc[key]
        del doc[last]
    return change


def both(*changes: Change) -> Change:
    def change(doc: dict, folder: Path) -> None:
        for c in changes:
            c(doc, folder)
    return change


def rehashed(doc: dict, folder: Path) -> None:
    """The space_hash of the (changed) space, as a careful forger would write it."""
    doc["space_hash"] = SearchSpace.from_dict(doc["space"]).hash


def nested(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def weights_linked_to(target: Callable[[Path], Path]) -> Change:
    """The index names `evil.safetensors`, a symlink (made here) to `target(folder)`."""
    def change(doc: dict, folder: Path) -> None:
        (folder / "evil.safetensors").symlink_to(target(folder))
        doc["weights"]["file"] = "evil.safetensors"
    return change


def outside_file(folder: Path) -> Path:
    """A file next to the zoo folder, outside it: its content and hash must not show in any message."""
    outside = folder.parent / "outside.bin"
    outside.write_bytes(b"secret outside the zoo folder\n")
    return outside


Edit = Callable[[dict[str, torch.Tensor]], object]  # changes the tensors of a weight file in place


def edit_weights(folder: Path, edit: Edit) -> str:
    """Apply `edit` to the tensors of the zoo's weight file; returns the file's new sha256."""
    weights = folder / "supernet.safetensors"
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights)
    return sha256_file(weights)


def edited(edit: Edit) -> Change:
    """The weight file's tensors changed by `edit`, the index recording the new file's sha256, as a careful forger
    would write it (so only the tensors are wrong)."""
    def change(doc: dict, folder: Path) -> None:
        doc["weights"]["sha256"] = edit_weights(folder, edit)
    return change


def filled(name: str, value: float) -> Change:
    """One tensor filled with `value`."""
    return edited(lambda tensors: tensors[name].fill_(value))


def broken(zoo_dir: Path, where: Path, change: Change) -> Path:
    """A copy of the zoo with `change` applied to its index."""
    folder = shutil.copytree(zoo_dir, where / "zoo")
    doc = json.loads((folder / "zoo.json").read_text())
    text = change(doc, folder)
    (folder / "zoo.json").write_text(json.dumps(doc) if text is None else text)  # NaN/inf written as NaN/Infinity
    return folder


CASES = {
    # the weights block
    "sha256 a number": (setting("weights.sha256", 5), r"weights\.sha256: Input should be a valid string, got 5$"),
    "sha256 not hex": (setting("weights.sha256", "ab" * 31), r"weights\.sha256: String should match pattern"),
    "weights null": (setting("weights", None), r"weights: Input should be a valid dictionary.*, got None$"),
    "weights.file a list": (setting("weights.file", ["supernet.safetensors"]),
                            r"weights\.file: Input should be a valid string, got \['supernet\.safetensors'\]$"),
    "weights.file up and out": (setting("weights.file", "../../../../etc/passwd"),
                                r"weights\.file: must be a plain file name in the zoo folder, got '\.\./\.\./"),
    "weights.file absolute": (setting("weights.file", "/etc/passwd"),
                              r"weights\.file: must be a plain file name in the zoo folder, got '/etc/passwd'$"),
    "weights.file a dot-dot": (setting("weights.file", ".."), r"weights\.file: must be a plain file name"),
    "weights.file a symlink out": (weights_linked_to(outside_file),
                                   r"weights\.file: 'evil\.safetensors' does not resolve inside the zoo folder"),
    "weights.file a symlink loop": (weights_linked_to(lambda folder: folder / "evil.safetensors"),
                                    r"weights\.file: 'evil\.safetensors' does not resolve inside the zoo folder"),
    "weights.file missing": (setting("weights.file", "other.safetensors"),
                             r"weights\.file: .*other\.safetensors is missing$"),
    "weights.dtype unknown": (setting("weights.dtype", "torch.int8"),
                              r"weights\.dtype: Input should be 'torch\.float16' or 'torch\.float32', got 'torch"),
    "a weight NaN": (filled("blocks.2.attn.qkv.weight", float("nan")),
                     r"supernet\.safetensors: tensor 'blocks\.2\.attn\.qkv\.weight' holds NaN or infinite values$"),
    "a weight infinite": (filled("head.weight", float("inf")), r"tensor 'head\.weight' holds NaN or infinite values$"),
    "weights.size unknown": (setting("weights.size", 5), r"weights\.size: Extra inputs are not permitted, got 5$"),
    # entries
    "entries an object": (setting("entries", {}), r"entries: Input should be a valid list, got \{\}$"),
    "entries empty": (setting("entries", []), r"entries: List should have at least 1 item after validation"),
    "an entry a number": (setting("entries.1", 7), r"entries\[1\]: Input should be a valid dictionary.*, got 7$"),
    "entry listed twice": (lambda doc, _: doc["entries"].append(doc["entries"][0]),
                           r"entries: entries\[0\] and entries\[4\] are both e64-d4-"),
    "top1 a string": (setting("entries.0.top1", "84.0"),
                      r"entries\[0\]\.top1: Input should be a valid number, got '84\.0'$"),
    "top1 true": (setting("entries.0.top1", True), r"entries\[0\]\.top1: Input should be a valid number, got True$"),
    "top1 NaN": (setting("entries.0.top1", float("nan")), r"entries\[0\]\.top1 must be a finite number, got nan$"),
    "top1 infinite": (setting("entries.0.top1", float("inf")),
                      r"entries\[0\]\.top1 must be a finite number, got inf$"),
    "top1 over 100": (setting("entries.0.top1", 101),
                      r"entries\[0\]\.top1: Input should be less than or equal to 100, got 101$"),
    "top5 negative": (setting("entries.3.top5", -1.0),
                      r"entries\[3\]\.top5: Input should be greater than or equal to 0, got -1\.0$"),
    "loss negative": (setting("entries.0.loss", -0.5), r"entries\[0\]\.loss: Input should be greater than or equal"),
    "latency without median": (setting("entries.2.latency", {"p10_ms": 1.0, "p90_ms": 2.0}),
                               r"entries\[2\]\.latency\.median_ms: missing$"),
    "latency zero": (setting("entries.2.latency", {**LATENCY, "median_ms": 0}),
                     r"entries\[2\]\.latency\.median_ms: Input should be greater than 0, got 0$"),
    "latency a string": (setting("entries.2.latency", "fast"),
                         r"entries\[2\]\.latency: Input should be a valid dictionary.*, got 'fast'$"),
    "params a string": (setting("entries.0.params", "147178"),
                        r"entries\[0\]\.params: Input should be a valid integer, got '147178'$"),
    "params off by one": (lambda doc, _: doc["entries"][0].update(params=doc["entries"][0]["params"] + 1),
                          r"entries\[0\]: says id/params/flops 'e64-d4-\w+'/\d+/\d+ "
                          r"but its arch gives e64-d4-\w+/\d+/\d+$"),
    "an unknown entry field": (setting("entries.0.top_1", 84.0),
                               r"entries\[0\]\.top_1: Extra inputs are not permitted, got 84\.0$"),
    "arch outside the space": (setting("entries.0.arch.embed_dim", 65),
                               r"entries\[0\]\.arch: embed_dim 65 is not allowed in space 'mini'"),
    "arch a list": (setting("entries.0.arch", [64, 4]),
                    r"entries\[0\]\.arch: an architecture must be a mapping, got list$"),
    "entry id missing": (removing("entries.0.id"), r"entries\[0\]\.id: missing$"),
    # classes
    "classes missing": (removing("classes"), r"zoo\.json: classes: missing$"),
    "classes a string": (setting("classes", "T-shirt/top"), r"classes: Input should be a valid list, got 'T-shirt"),
    "classes one short": (removing("classes.9"), r"classes: 9 names for a space with 10 classes$"),
    "classes one too many": (lambda doc, _: doc["classes"].append("Sock"),
                             r"classes: 11 names for a space with 10 classes$"),
    "a class name empty": (setting("classes.3", ""), r"classes\[3\]: String should have at least 1 character"),
    "a class name a number": (setting("classes.0", 0), r"classes\[0\]: Input should be a valid string, got 0$"),
    "a class name twice": (setting("classes.6", "Coat"), r"classes: 'Coat' is listed 2 times$"),
    # space, name, preprocessing, metadata
    "space a number": (setting("space", 5), r"space: a search space must be a mapping, got int$"),
    "space missing": (removing("space"), r"space: a search space must be a mapping, got NoneType$"),
    "space super size a list": (setting("space.super_embed_dim", [96]), r"space: int\(\) argument must be"),
    "space name a list": (both(setting("space.name", ["mini"]), rehashed),
                          r"space\.name: Input should be a valid string, got \['mini'\]$"),
    "space_hash wrong": (setting("space_hash", "deadbeef"),
                         r"space_hash: 'deadbeef' does not match its space \([0-9a-f]{12}\)$"),
    "name empty": (setting("name", ""), r"name: String should have at least 1 character"),
    "name a number": (setting("name", 5), r"name: Input should be a valid string, got 5$"),
    "preprocessing null": (setting("preprocessing", None), r"preprocessing: Input should be a valid dictionary"),
    "preprocessing mean NaN": (setting("preprocessing.mean", [float("nan")]),
                               r"preprocessing\.mean\[0\] must be a finite number, got nan$"),
    "preprocessing crop too big": (setting("preprocessing.crop_pct", 1.5),
                                   r"preprocessing: crop_pct must lie in \(0, 1\], got 1\.5$"),
    "dataset a number": (setting("dataset", 5), r"dataset: Input should be a valid string, got 5$"),
    "training a list": (setting("training", []), r"training: Input should be a valid dictionary"),
    "training.lr NaN": (setting("training", {"lr": float("nan")}), r"training\.lr must be a finite number, got nan$"),
    "kind wrong": (setting("kind", "prezoo.preferred"), r"is not a PreZoo prezoo\.zoo file"),
    "schema_version a string": (setting("schema_version", "1"), r"schema_version '1' is not supported"),
    # the file as a whole
    "not an object": (lambda doc, _: "[1, 2]", r"is not a PreZoo prezoo\.zoo file"),
    "nested 40 deep": (setting("training", {"x": nested(40)}), r"training\.x(\[0\]){30} nests deeper than 32 levels$"),
    "nested 100000 deep": (lambda doc, _: json.dumps({**doc, "x": 0})[:-2] + "[" * 100_000 + "]" * 100_000 + "}",
                           r"zoo\.json nests deeper than 32 levels"),
    "over 16 MiB": (setting("padding", "x" * MAX_JSON_BYTES), r"zoo\.json is over 16 MiB"),
}


@pytest.mark.parametrize("change, message", CASES.values(), ids=CASES.keys())
def test_a_malformed_index_is_one_zoo_error_naming_the_field(zoo_dir, tmp_path, change, message):
    folder = broken(zoo_dir, tmp_path, change)
    with pytest.raises(ZooError, match=message) as refused:
        Zoo.load(folder)
    assert str(refused.value).startswith(str(folder)) and "\n" not in str(refused.value)


def test_the_shipped_and_the_fixture_zoos_load_unchanged(zoo_dir):
    for folder in (DEFAULT_ZOO, zoo_dir):
        zoo = Zoo.load(folder)
        assert zoo.doc == json.loads((folder / "zoo.json").read_text())
        assert [e.to_dict() for e in zoo.entries] == zoo.doc["entries"]
    assert all(e.latency is not None for e in Zoo.load(DEFAULT_ZOO).entries)


@pytest.fixture(scope="module")
def val_zoo_dir(tmp_path_factory) -> Path:
    """The fixture zoo with validation accuracy recorded (tests.test_store.validated)."""
    return validated(tmp_path_factory.mktemp("val") / "zoo").root


def test_validation_accuracy_round_trips_and_an_index_without_it_reads_as_it_always_did(zoo_dir, val_zoo_dir):
    for folder, chosen_by in ((zoo_dir, CHOSEN_ON_TEST), (val_zoo_dir, "validation")):
        zoo = Zoo.load(folder)
        assert zoo.doc == json.loads((folder / "zoo.json").read_text()) and zoo.chosen_by == chosen_by
        assert [e.to_dict() for e in zoo.entries] == zoo.doc["entries"]
    assert not any("val_top1" in e or "val_top5" in e for e in Zoo.load(zoo_dir).doc["entries"])
    assert [(e.val_top1, e.val_top5) for e in Zoo.load(val_zoo_dir).entries] == [(v, 99.0) for v in VAL_ACCURACY]


VAL_CASES = {
    "val_top1 over 100": (setting("entries.0.val_top1", 101), r"entries\[0\]\.val_top1: Input should be less than or "
                                                              r"equal to 100, got 101$"),
    "an entry without val_top1": (removing("entries.2.val_top1"),
                                  r"validation: entries\[2\] has no val_top1 \(every entry needs one\)$"),
    "val_top1 without a split": (removing("validation"), r"entries\[0\] records validation accuracy but the index "
                                                         r"names no validation split it was measured on$"),
    "the split a test": (setting("validation.split", "test"), r"validation\.split: Input should be 'val', got 'test'$"),
    "no images": (setting("validation.images", 0), r"validation\.images: Input should be greater than 0, got 0$"),
    "an unknown field": (setting("validation.size", 5), r"validation\.size: Extra inputs are not permitted, got 5$"),
    # a split the training did not hold out, or one it cannot tell: it may overlap the images trained on
    "another seed": (setting("validation.seed", 1), r"validation: 5000 images of 'fashion-mnist' held out with seed 1 "
                                                    r"are not the split the supernet's training held out \(the default "
                                                    r"number of images of 'fashion-mnist', seed 0\): they may overlap"),
    "another size": (setting("training.val_size", 4000), r"not the split the supernet's training held out \(4000 "
                                                         r"images of 'fashion-mnist', seed 0\)"),
    "another source": (setting("validation.source", "cifar10:/data"), r"images of 'cifar10:/data' held out"),
    "no training block": (removing("training"), r"validation: the index records no training settings: which images "
                                                r"the supernet was trained on cannot be determined$"),
    "no training seed": (removing("training.seed"), r"validation: training records no seed: which images"),
    "a seed as text": (setting("training.seed", "0"), r"validation: training\.seed is '0', not a non-negative integer"),
    "nothing held out": (setting("training.val_size", 0), r"validation: training\.val_size is 0: the supernet was "
                                                          r"trained on every training image"),
}


@pytest.mark.parametrize("change, message", VAL_CASES.values(), ids=VAL_CASES.keys())
def test_validation_that_is_not_whole_or_not_the_trainings_held_out_split_is_refused(val_zoo_dir, tmp_path, change,
                                                                                       message):
    folder = broken(val_zoo_dir, tmp_path, change)
    with pytest.raises(ZooError, match=message) as refused:
        Zoo.load(folder)
    assert str(refused.value).startswith(str(folder)) and "\n" not in str(refused.value)


@pytest.mark.parametrize("change", [
    setting("name", "n" * 1_000_000),
    setting("classes.0", "c" * 1_000_000),
    setting("entries.0.id", "i" * 1_000_000),
    setting("weights.file", "../" * 300_000),
    setting("weights.sha256", "f" * 1_000_000),
    setting("space.embed_dims", [64, *range(1, 200_000)]),  # SearchSpace quotes the whole list: clipped here
    setting("preprocessing.interpolation", "z" * 1_000_000),
    setting("training", {"k" * 1_000_000: float("nan")}),
], ids=["name", "class", "entry id", "weights.file", "sha256", "space list", "interpolation", "key"])
def test_messages_never_echo_a_huge_value(zoo_dir, tmp_path, change):
    with pytest.raises(ZooError) as refused:
        Zoo.load(broken(zoo_dir, tmp_path, change))
    assert len(str(refused.value)) < len(str(tmp_path)) * 2 + 400


def test_a_weight_file_outside_the_folder_is_never_read_or_hashed(zoo_dir, tmp_path):
    folder = broken(zoo_dir, tmp_path, weights_linked_to(outside_file))
    digest = sha256_file(tmp_path / "outside.bin")
    with pytest.raises(ZooError) as refused:
        Zoo.load(folder)
    assert not any(digest[i:i + 8] in str(refused.value) for i in range(len(digest) - 7))
    assert "secret" not in str(refused.value)


def test_an_index_that_is_a_symlink_out_of_the_folder_is_refused(zoo_dir, tmp_path):
    folder = shutil.copytree(zoo_dir, tmp_path / "zoo")
    shutil.move(folder / "zoo.json", tmp_path / "elsewhere.json")
    (folder / "zoo.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ZooError, match=r"zoo\.json does not resolve inside the zoo folder"):
        Zoo.load(folder)


def test_the_supernet_is_the_one_checked_at_load_whatever_happens_to_the_file_later(zoo_dir, tmp_path):
    folder = shutil.copytree(zoo_dir, tmp_path / "zoo")
    zoo = Zoo.load(folder)
    edit_weights(folder, lambda tensors: tensors["head.bias"].fill_(float("-inf")))
    assert torch.equal(zoo.supernet.head.bias, load_file(zoo_dir / "supernet.safetensors")["head.bias"])


def test_a_hub_zoo_loads_through_its_snapshot_links_but_its_index_cannot_lead_out(zoo_dir, tmp_path, local_hub,
                                                                                monkeypatch):
    from export.hub import push_folder

    monkeypatch.setenv("HF_TOKEN", "test-admin-token")
    push_folder(zoo_dir, "prezoo-schema/good")
    pulled = Zoo.load("prezoo-schema/good")
    assert (pulled.root / "supernet.safetensors").is_symlink() and pulled.checksum == Zoo.load(zoo_dir).checksum
    push_folder(broken(zoo_dir, tmp_path, setting("weights.file", "../../../../etc/passwd")), "prezoo-schema/evil")
    with pytest.raises(ZooError, match=r"weights\.file: must be a plain file name in the zoo folder"):
        Zoo.load("prezoo-schema/evil")


SERVER_CASES = {
    "sha256 a number": (setting("weights.sha256", 5), "weights.sha256: Input should be a valid string"),
    "entries an object": (setting("entries", {}), "entries: Input should be a valid list"),
    "nested 100000 deep": (CASES["nested 100000 deep"][0], "nests deeper than 32 levels"),
    "weights.file up and out": (setting("weights.file", "../../../../etc/passwd"), "weights.file: must be a plain"),
    "NaN weights": (filled("pos_embed", float("nan")), "tensor 'pos_embed' holds NaN"),
}


def server_refusal(folder: Path, tmp_path: Path) -> str:
    """What `python -m server --zoo folder` says on stderr as it refuses the zoo: exit 2 and one line (a server that
    starts instead runs into the timeout)."""
    out = subprocess.run([sys.executable, "-m", "server", "--zoo", str(folder), "--port", "0"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, env={**os.environ, "PREZOO_CACHE": str(tmp_path / "c")})
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("python -m server: cannot use zoo")
    return out.stderr


@pytest.mark.parametrize("change, message", SERVER_CASES.values(), ids=SERVER_CASES.keys())
def test_the_server_refuses_a_malformed_zoo_with_one_line_and_exit_2(zoo_dir, tmp_path, change, message):
    assert message in server_refusal(broken(zoo_dir, tmp_path, change), tmp_path)
