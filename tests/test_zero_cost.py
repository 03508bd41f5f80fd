"""PreNAS's zero-cost selector on an MBConv space (training.zero_cost): SNIP at initialisation checked against
autograd and against its linearity in the batch, the per-bucket search and its files, the command line and the
flags that belong to the other family's selector."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from training.__main__ import main
from training.config import ZeroCostConfig
from training.preferred import Buckets, load_preferred
from training.select import gaussian_batch
from training.zero_cost import select, snip_at_init
from zoo.families.mbconv import MBConvArch
from zoo.families.mbconv.layers import params
from zoo.families.mbconv.sampling import random_arch
from zoo.families.mbconv.space import MBCONV_TINY as TINY
from zoo.family import get_family

BUCKETS = Buckets(2_000, 34_000, width=8_000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def archs(n: int) -> list[MBConvArch]:
    import random

    rng = random.Random(1)
    return [random_arch(TINY, rng) for _ in range(n)]


def batch(n: int = 16) -> torch.Tensor:
    return gaussian_batch(TINY, n, torch.Generator().manual_seed(0))


def test_snip_is_the_sum_of_weight_times_gradient_that_autograd_gives():
    x = batch()
    y = torch.arange(len(x)) % 10
    for arch in archs(3):
        torch.manual_seed(7)
        model = get_family("mbconv").pretrained(space=TINY.to_dict(), arch=arch.to_dict()).train()
        weights = list(model.parameters())
        for labels, loss_of in ((None, lambda out: out.sum()),
                                (y, lambda out: F.cross_entropy(out, y, reduction="sum"))):
            model.zero_grad()
            grads = torch.autograd.grad(loss_of(model(x)), weights, allow_unused=True)
            expected = sum(float((w.detach() * g).abs().sum())
                           for w, g in zip(weights, grads, strict=True) if g is not None)
            assert snip_at_init(TINY, arch, (x, labels), seed=7) == pytest.approx(expected, rel=1e-5)


def test_the_data_free_score_doubles_with_a_doubled_batch_and_depends_on_the_seed():
    """Σ logits over a batch seen twice: BatchNorm's statistics are unchanged, every gradient doubles."""
    x = batch(8)
    arch = archs(1)[0]
    once = snip_at_init(TINY, arch, (x, None), seed=0)
    assert snip_at_init(TINY, arch, (torch.cat([x, x]), None), seed=0) == pytest.approx(2 * once, rel=1e-4)
    assert snip_at_init(TINY, arch, (x, None), seed=0) == once  # a function of the arch: the search's memo holds
    assert snip_at_init(TINY, arch, (x, None), seed=1) != once


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero-cost")
    cfg = ZeroCostConfig(TINY, batch_size=16, evaluations=12, population=6, buckets=BUCKETS, progress=False)
    doc, scores = select(cfg, out)
    return cfg, out, doc, scores


def test_each_bucket_keeps_the_highest_scoring_arch_its_search_scored(selected):
    cfg, out, doc, scores = selected
    space, entries = load_preferred(out / "preferred.json")
    assert space == TINY and doc["family"] == "mbconv" and doc["selector"]["method"] == "zero-cost"
    assert json.loads((out / "scores.json").read_text()) == scores
    assert len(entries) == BUCKETS.count  # every bucket of mbconv-tiny is reachable
    one_batch = gaussian_batch(TINY, 16, torch.Generator().manual_seed(0)), None
    for bucket in doc["buckets"]:
        (entry,) = bucket["entries"]
        inside = [a for a in scores["archs"] if bucket["low"] <= a["params"] < bucket["high"]]
        assert len(inside) >= cfg.evaluations and entry["score"] == max(a["score"] for a in inside)
        arch = MBConvArch.from_dict(entry["arch"])
        assert entry["params"] == params(TINY, arch) and bucket["low"] <= entry["params"] < bucket["high"]
        assert snip_at_init(TINY, arch, one_batch, seed=0) == pytest.approx(entry["score"], rel=1e-6)
    assert [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()] == \
        ["bucket"] * BUCKETS.count


def test_the_command_selects_plots_and_names_the_next_step(tmp_path, capsys):
    out = tmp_path / "sel"
    assert main(["select", "--space", "mbconv-tiny", "--batch-size", "8", "--evaluations", "4", "--population", "4",
                 "--low", "4K", "--high", "12K", "--width", "4K", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4K-8K" in printed and "8K-12K" in printed and f"train --preferred {out / 'preferred.json'}" in printed
    assert (out / "preferred.png").stat().st_size > 10_000
    assert [len(b["entries"]) for b in json.loads((out / "preferred.json").read_text())["buckets"]] == [1, 1]


@pytest.mark.parametrize("argv, message", [
    (["--space", "mbconv-tiny", "--proxy", "snip"],
     "error: --proxy does not apply to `python -m training select` on MBConv spaces (mbconv-tiny)"),
    (["--space", "mbconv-tiny", "--bucket-by", "flops"],
     "error: --bucket-by does not apply to `python -m training select` on MBConv spaces (mbconv-tiny)"),
    (["--space", "mini", "--evaluations", "5"],
     "error: --evaluations does not apply to `python -m training select` on ViT spaces (mini)"),
    (["--space", "mbconv-tiny", "--data", "nowhere:x"], "error: "),
])
def test_the_command_refuses_the_other_familys_settings_and_writes_nothing(tmp_path, capsys, argv, message):
    assert main(["select", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert not (tmp_path / "out").exists()
