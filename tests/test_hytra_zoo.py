"""The committed HyTra zoo (`zoos/hytra-fmnist`): BossNAS's label-free picks, one per param bucket, trained once as a
supernet. That each entry, served with its own BatchNorm statistics, gives the test and validation accuracy its index
records is checked with every committed zoo's (tests/test_zoo_accuracy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.preferred import Buckets
from zoo import Zoo
from zoo.families.hytra import MICRO_HYTRA, enumerate_archs

HYTRA_ZOO = Path(__file__).resolve().parent.parent / "zoos" / "hytra-fmnist"


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return Zoo.load(HYTRA_ZOO)


def test_the_hytra_zoo_holds_one_bossnas_pick_per_bucket_and_fits_the_size_limit(zoo):
    assert zoo.family.name == "hytra" and zoo.space == MICRO_HYTRA
    selector = zoo.doc["selector"]
    assert selector["method"] == "bossnas" and selector["target"] == "ensemble"
    buckets = Buckets(**selector["buckets"])
    assert sorted(buckets.index(e.params) for e in zoo.entries) == list(range(buckets.count))
    assert {e.arch for e in zoo.entries} <= set(enumerate_archs(zoo.space))
    assert zoo.doc["eval_images"] == 10_000 and "recalibrated" in zoo.doc["eval_protocol"]
    assert sum(f.stat().st_size for f in HYTRA_ZOO.iterdir()) <= 25 * 2**20  # the limit for a committed zoo
