"""Accuracy a zoo records: every committed zoo's test and validation top-1 re-measured as the zoo serves its entries;
validation accuracy written by packaging and in place (`python -m training evaluate --zoo Z --split val --write`),
the two alike, on the images the supernet's training held out; a split that may overlap the training data refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_family_train import PREFERRED, TINY, space_file, write_preferred
from tests.zoo_fixtures import make_zoo
from training.__main__ import main as training_main
from training.data import load_data
from training.evaluate import accuracy_of, tensor_batches, zoo_accuracy, zoo_split
from training.package import package_run
from training.train import TrainConfig, train
from zoo import BUILTIN_SPACES, Zoo, ZooError
from zoo.schema import HeldOut, held_out_split
from zoo.store import CHOSEN_ON_TEST, INDEX, WEIGHTS

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(index.parent for index in (ROOT / "zoos").glob(f"*/{INDEX}"))
SHIPPED = ("hytra-fmnist", "ladder-fmnist", "mbconv-fmnist")
SYNTHETIC = {"data": "synthetic:64", "seed": 1, "val_size": 16}  # training settings: 16 of 64 images held out


def assert_recorded(zoo: Zoo, split: str, images_off: int = 1) -> None:
    """Each entry of `zoo`, served as it is (`Zoo.subnet`), measures on `split` the top-1 its index records: test's
    `top1`, or validation's `val_top1` on the split the index names; within `images_off` images (another machine's
    arithmetic may flip one)."""
    data, validation = zoo_split(zoo, split)
    assert validation == zoo.validation if split == "val" else len(data) == zoo.eval_images
    measured = zoo_accuracy(zoo, tensor_batches(data), progress=False)
    for e in zoo.entries:
        recorded = e.val_top1 if split == "val" else e.top1
        assert measured[e.id].top1 == pytest.approx(recorded, abs=100 * images_off / len(data) + 1e-9), \
            (zoo.name, split, e.id)


def test_every_zoo_in_the_repository_is_committed_with_validation_accuracy():
    """On the images its training held out (`Zoo.load` checks the split is that one): the ViT, HyTra and MBConv zoos'
    5,000 Fashion-MNIST training images of seed 0, held out by default."""
    assert set(SHIPPED) <= {folder.name for folder in COMMITTED}
    for folder in COMMITTED:
        zoo = Zoo.load(folder)
        assert zoo.chosen_by == "validation", folder
        if folder.name in SHIPPED:
            assert held_out_split(zoo.doc["training"]) == HeldOut("fashion-mnist", 0, None)
            assert (zoo.validation["images"], zoo.validation["seed"]) == (5000, 0)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "val"])
@pytest.mark.parametrize("folder", COMMITTED, ids=lambda folder: folder.name)
def test_every_committed_zoo_reproduces_its_recorded_accuracy(folder, split):
    assert_recorded(Zoo.load(folder), split)


# -- the split: the one the training held out, or refused -------------------------------------------------------------
@pytest.mark.parametrize("training, message", [
    (None, "the index records no training settings: which images the supernet was trained on cannot be determined"),
    ({"data": "fashion-mnist", "val_size": None}, "training records no seed: which images"),
    ({"data": "fashion-mnist", "seed": True, "val_size": None}, "training.seed is True, not a non-negative integer"),
    ({"data": "fashion-mnist", "seed": 0, "val_size": -5}, "training.val_size is -5, neither null nor"),
    ({"data": 7, "seed": 0, "val_size": None}, "training.data is 7, not a data source"),
    ({"data": "fashion-mnist", "seed": 0, "val_size": 0}, "training.val_size is 0: the supernet was trained on every "
                                                         "training image, so no validation split lies outside"),
])
def test_a_split_the_training_settings_cannot_tell_or_did_not_hold_out_is_refused(training, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        held_out_split(training)


@pytest.mark.parametrize("training, message", [
    ({**SYNTHETIC, "val_size": 0}, "trained on every training image"),
    (None, "records no training settings"),
])
def test_writing_validation_into_a_zoo_whose_split_may_overlap_its_training_data_is_refused(tmp_path, capsys,
                                                                                           training, message):
    folder = make_zoo(tmp_path / "zoo", **({} if training is None else {"training": training}))
    before = (folder / INDEX).read_bytes()
    assert training_main(["evaluate", "--zoo", str(folder), "--split", "val", "--write"]) == 2
    assert message in capsys.readouterr().err and (folder / INDEX).read_bytes() == before


def test_a_split_other_than_the_held_out_one_is_never_written(tmp_path):
    zoo = Zoo.load(make_zoo(tmp_path / "zoo", training=SYNTHETIC))
    before = (zoo.root / INDEX).read_bytes()
    other_seed = {"source": "synthetic:64", "split": "val", "held_out_of": "train", "images": 16, "seed": 0}
    with pytest.raises(ZooError, match="not the split the supernet's training held out .*: they may overlap"):
        zoo.with_validation(other_seed, {e.id: (50.0, 90.0) for e in zoo.entries})
    assert (zoo.root / INDEX).read_bytes() == before and zoo.chosen_by == CHOSEN_ON_TEST


# -- writing it: in place, and by packaging ---------------------------------------------------------------------------
def test_validation_written_in_place_is_the_held_out_images_accuracy_and_nothing_else_changes(tmp_path):
    folder = make_zoo(tmp_path / "zoo", training=SYNTHETIC)
    before, weights = json.loads((folder / INDEX).read_text()), (folder / WEIGHTS).read_bytes()
    assert training_main(["evaluate", "--zoo", str(folder), "--split", "val", "--write"]) == 0
    zoo = Zoo.load(folder)
    held_out = {"img_size": 28, "in_chans": 1, "val_size": 16, "seed": 1}
    val, train_split = (load_data("synthetic:64", split, **held_out)[0] for split in ("val", "train"))
    assert set(val.indices).isdisjoint(train_split.indices) and len(val) == 16  # never trained on
    assert zoo.validation == {
        "source": "synthetic:64", "split": "val", "held_out_of": "train", "images": 16, "seed": 1,
        "protocol": "synthetic val split, 16 images held out of the training split (seed 1), single crop at 28px, "
                    "weights inherited from the supernet"}
    for e in zoo.entries:
        assert e.val_top1 == accuracy_of(zoo.subnet(e), tensor_batches(val)).top1
    after = json.loads((folder / INDEX).read_text())
    for entry in after["entries"]:
        del entry["val_top1"], entry["val_top5"]
    assert {k: v for k, v in after.items() if k != "validation"} == before
    assert (folder / WEIGHTS).read_bytes() == weights


def tiny_run(folder: Path, family: str, val_size: int | None) -> Path:
    """A few steps of a supernet (ViT `mini`, two entries; HyTra `tiny-hytra`, three) on 64 synthetic images,
    `val_size` of them held out, evaluated on the test split."""
    mini = BUILTIN_SPACES["mini"]
    space, archs = ("mini", [mini.smallest_arch(), mini.largest_arch()]) if family == "vit" else \
        (space_file(folder), PREFERRED)
    preferred = write_preferred(folder / "preferred.json", mini if family == "vit" else TINY, archs,
                                None if family == "vit" else family)
    run = train(TrainConfig(out=str(folder / "run"), space=space, preferred=preferred, data="synthetic:64",
                            val_size=val_size, augment=False, epochs=1, batch_size=16, warmup_epochs=0, progress=False))
    assert training_main(["evaluate", "--run", str(run)]) == 0
    return run


@pytest.mark.parametrize("family", ["vit", "hytra"])
def test_packaging_records_the_validation_accuracy_the_zoo_then_serves(tmp_path, family):
    """Packaging measures the weights (and a HyTra path's BatchNorm statistics) as stored; measured again in place,
    the packaged zoo gives every entry the same predictions, image for image."""
    summary = package_run(tiny_run(tmp_path, family, val_size=16), tmp_path / "zoo", "t", progress=False)
    zoo = Zoo.load(tmp_path / "zoo")
    assert summary["validation"] == "16 held-out images" and zoo.chosen_by == "validation"
    assert zoo.validation["seed"] == 0 and zoo.validation["images"] == 16
    assert ("recalibrated per path" in zoo.validation["protocol"]) == (family == "hytra")
    assert_recorded(zoo, "val", images_off=0)
    assert_recorded(zoo, "test", images_off=0)


def test_a_run_that_held_no_images_out_packages_a_zoo_that_chooses_on_test_and_says_so(tmp_path):
    summary = package_run(tiny_run(tmp_path, "vit", val_size=None), tmp_path / "zoo", "t", progress=False)
    zoo = Zoo.load(tmp_path / "zoo")
    assert summary["validation"] == ("none: synthetic data holds no validation images unless val_size is given "
                                     "(train --val-size)")
    assert zoo.chosen_by == CHOSEN_ON_TEST and zoo.validation is None and all(e.val_top1 is None for e in zoo.entries)
    assert "optimistic" in zoo.choice_text()
