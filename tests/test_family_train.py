"""Model families, training side: a HyTra supernet trains (preferred or uniform sampling, exact resume), evaluates and
packages through the same commands as a ViT; each HyTra entry keeps BatchNorm statistics of its own in the zoo's
weight file, and its accuracy as packaged is what the reloaded zoo (and the server) gives."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from server.app import create_app
from tests.test_server import Live, png, predict, serve
from tests.test_train import KILL_AT_RENAME, ROOT, _cli
from tests.test_v2 import images
from training.__main__ import main as training_main
from training.data import load_data
from training.evaluate import accuracy_of, load_supernet, tensor_batches
from training.package import package_run
from training.sampler import OptionBalancedSampler, PreferredSampler, UniformSampler
from training.train import TrainConfig, train
from zoo import BUILTIN_SPACES, Zoo, ZooError
from zoo.families.hytra import MICRO_HYTRA, HyTraSpace, HyTraSupernet, enumerate_archs, params
from zoo.families.vit.supernet import ViTSupernet
from zoo.family import FAMILIES, get_family, space_by_name
from zoo.io import sha256_file
from zoo.layers import bn_statistics
from zoo.store import DEFAULT_ZOO, INDEX, WEIGHTS

HYTRA = FAMILIES["hytra"]
TINY = HyTraSpace("tiny-hytra", scale_channels=(8, 16, 32), head_dim=4, stem_channels=4, num_layers=4, block_size=2)
PATHS = sorted(enumerate_archs(TINY), key=lambda a: params(TINY, a))
PREFERRED = [PATHS[0], next(a for a in PATHS if ("att" in {op for _, op in a.layers})), PATHS[-1]]


def write_preferred(path: Path, space, archs: list, family: str | None) -> str:
    """A preferred.json as a selector writes it; `family` None leaves the field out (every file before families)."""
    fam = get_family(family or "vit")
    doc = {"schema_version": 1, "kind": "prezoo.preferred", **({"family": family} if family else {}),
           "space": space.to_dict(), "space_hash": space.hash, "selector": {"proxy": "test input"},
           "buckets": [{"low": 0, "high": 1e9, "entries": [
               {"id": a.id, "arch": a.to_dict(), "params": fam.params(space, a), "flops": fam.flops(space, a),
                "score": 0.0} for a in archs]}]}
    path.write_text(json.dumps(doc))
    return str(path)


def space_file(folder: Path) -> str:
    """The tiny HyTra space as a space file naming its family (training takes a built-in name or a file)."""
    path = folder / "tiny-hytra.json"
    path.write_text(json.dumps({"family": "hytra", **TINY.to_dict()}))
    return str(path)


def train_args(out: Path, space: str, preferred: str, epochs: str) -> list[str]:
    return ["train", "--out", str(out), "--space", space, "--preferred", preferred, "--epochs", epochs,
            "--batch-size", "64", "--ckpt-every", "4", "--log-every", "4", "--no-progress", "--warmup-epochs", "0.002",
            "--lr", "0.005"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("inputs")
    return space_file(folder), write_preferred(folder / "preferred.json", TINY, PREFERRED, "hytra")


@pytest.fixture(scope="module")
def run(tmp_path_factory, inputs) -> Path:
    """A tiny HyTra run trained (preferred sampler, 42 steps) and evaluated on the test split, by the CLI."""
    out = tmp_path_factory.mktemp("run")
    assert training_main(train_args(out, *inputs, epochs="0.05")) == 0
    assert training_main(["evaluate", "--run", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def test_batches() -> list:
    return tensor_batches(load_data("fashion-mnist", "test")[0])


def packaged(run: Path, out: Path, max_fp16_drift: float) -> Zoo:
    package_run(run, out, "tiny-hytra", max_fp16_drift=max_fp16_drift, progress=False)
    return Zoo.load(out)


@pytest.fixture(scope="module")
def zoo16(run, tmp_path_factory) -> Zoo:
    return packaged(run, tmp_path_factory.mktemp("zoo16") / "zoo", max_fp16_drift=100.0)


@pytest.fixture(scope="module")
def zoo32(run, tmp_path_factory) -> Zoo:
    return packaged(run, tmp_path_factory.mktemp("zoo32") / "zoo", max_fp16_drift=-1.0)


# -- spaces, samplers ---------------------------------------------------------------------------------------------
def test_spaces_by_name_across_families_and_space_files(tmp_path):
    assert space_by_name("micro-hytra") == (HYTRA, MICRO_HYTRA)
    assert space_by_name("mini") == (FAMILIES["vit"], BUILTIN_SPACES["mini"])
    assert space_by_name(space_file(tmp_path)) == (HYTRA, TINY)
    vit_file = tmp_path / "vit.yaml"
    BUILTIN_SPACES["mini"].save(vit_file)  # no "family": a ViT space file, as before families
    assert space_by_name(str(vit_file)) == (FAMILIES["vit"], BUILTIN_SPACES["mini"])
    for family in FAMILIES.values():  # a space and its archs name their family (samplers and trainers read it)
        for space in family.spaces.values():
            assert space.family == family.name == family.random_arch(space, random.Random(0)).family
    (tmp_path / "bad.json").write_text(json.dumps({"family": "resnet", **TINY.to_dict()}))
    with pytest.raises(ValueError, match="unknown model family 'resnet'"):
        space_by_name(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="micro-hytra"):
        space_by_name("nope")


def test_hytra_samplers_one_preferred_group_uniform_over_paths_and_the_extremes():
    sampler = PreferredSampler(PREFERRED, seed=0)
    assert len(sampler.groups) == 1  # spec 7 item 2: uniform over the preferred paths
    draws = [sampler(s) for s in range(3000)]
    for a in PREFERRED:
        assert abs(draws.count(a) / len(draws) - 1 / 3) < 0.04
    uniform = UniformSampler(TINY, seed=1)
    drawn = [uniform(s) for s in range(2000)]
    assert drawn == [UniformSampler(TINY, seed=1)(s) for s in range(2000)]  # stateless, reproducible
    assert len(set(drawn)) > 0.5 * len(PATHS) and all(TINY.validate(a) for a in drawn)
    assert HYTRA.extreme_archs(TINY) == (PATHS[0], PATHS[-1])


def test_the_option_balanced_sampler_trains_every_decisions_every_option_alike():
    """Micro-HyTra's rarest options under uniform sampling (the all-S0 path's last layers: about 1 step in 4,290)
    are each drawn in about 1/64 of the steps here (64 options), by paths the space allows, reproducibly."""
    decisions = HYTRA.relaxation.decisions(MICRO_HYTRA)
    options = [(name, o) for name, opts in decisions.items() for o in opts]
    steps = 4290
    sampler = OptionBalancedSampler(MICRO_HYTRA, seed=0)
    drawn = [sampler(s) for s in range(steps)]
    assert drawn[:50] == [OptionBalancedSampler(MICRO_HYTRA, seed=0)(s) for s in range(50)]
    assert all(MICRO_HYTRA.validate(a) for a in drawn)
    taken = Counter(pair for a in drawn for pair in HYTRA.decisions_of(MICRO_HYTRA, a).items())
    assert set(taken) == set(options) and len(options) == 64
    assert min(taken.values()) >= 0.5 * steps / len(options)
    uniform = UniformSampler(MICRO_HYTRA, seed=0)
    rare = ("layer7@S0", (0, "conv"))  # only the all-S0 path takes it
    assert sum(HYTRA.decisions_of(MICRO_HYTRA, uniform(s)).get(rare[0]) == rare[1] for s in range(steps)) <= 5
    with pytest.raises(ValueError, match="named decisions"):
        OptionBalancedSampler(BUILTIN_SPACES["mini"], seed=0)  # the ViT family has no relaxation


@pytest.mark.parametrize("sampler", ["uniform", "option-balanced"])
def test_micro_hytra_trains_by_name_with_sandwich_sampling(tmp_path, sampler):
    cfg = TrainConfig(out=str(tmp_path), space="micro-hytra", sampler=sampler, sandwich=1, data="synthetic:64",
                      augment=False, epochs=1, batch_size=32, progress=False)
    train(cfg)
    with safe_open(tmp_path / "supernet.safetensors", "pt") as f:
        assert f.metadata()["family"] == "hytra"
    supernet = load_supernet(tmp_path / "supernet.safetensors")
    assert type(supernet) is HyTraSupernet and supernet.space == MICRO_HYTRA


def test_a_vit_preferred_json_without_family_still_trains_and_old_runs_load(tmp_path):
    mini = BUILTIN_SPACES["mini"]
    preferred = write_preferred(tmp_path / "preferred.json", mini, [mini.smallest_arch(), mini.largest_arch()], None)
    cfg = TrainConfig(out=str(tmp_path / "run"), space="mini", preferred=preferred, data="synthetic:64",
                      augment=False, epochs=1, batch_size=32, progress=False)
    weights = train(cfg) / "supernet.safetensors"
    tensors = load_file(weights)
    with safe_open(weights, "pt") as f:
        meta = f.metadata()
    assert meta["family"] == "vit"
    save_file(tensors, weights, metadata={k: v for k, v in meta.items() if k != "family"})  # a run from before
    assert type(load_supernet(weights)) is ViTSupernet


def test_zoo_imports_in_any_order():
    """A family's import may be what loads timm (the ViT's does): timm's registration of the families waits for it."""
    both = "assert timm.is_model('prezoo_hytra') and timm.is_model('prezoo_vit')"
    for code in ("import zoo.families.hytra", "import zoo.family", "from zoo import Zoo", "import zoo.families.vit",
                 f"import zoo.families.hytra, timm; {both}", f"import zoo.families.vit.model, timm; {both}"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, (code, out.stderr[-1500:])


# -- evaluate, package, reload ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_run_learns_and_its_evaluation_recalibrates_each_path(run):
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == int(0.05 * (55000 // 64)) and log[-1]["loss"] < log[0]["loss"] - 0.1, log
    doc = json.loads((run / "eval_test.json").read_text())
    assert [r["id"] for r in doc["results"]] == [a.id for a in PREFERRED]
    assert "recalibrated per path on the first 2048 training images" in doc["protocol"]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["zoo16", "zoo32"])
def test_each_entrys_packaged_accuracy_is_reproduced_on_reload_with_its_own_statistics(which, request, run,
                                                                                    test_batches):
    zoo = request.getfixturevalue(which)
    assert zoo.family is HYTRA and zoo.doc["fp16_check"]["stored_as"] == ("float16" if which == "zoo16" else "float32")
    x = test_batches[0][0][:64]
    for entry in zoo.entries:
        model = zoo.subnet(entry)
        assert accuracy_of(model, test_batches).top1 == entry.top1  # the same predictions, image for image
        shared = zoo.supernet.extract(entry.arch)  # the supernet's own statistics, shared by every path
        mine, theirs = bn_statistics(model), bn_statistics(shared)
        assert all(not torch.equal(mine[k], theirs[k]) for k in mine if k.endswith("running_mean")), entry.id
        with torch.no_grad():
            assert not torch.allclose(model(x), shared(x), atol=1e-3), entry.id
    if which == "zoo32":  # stored as trained, not rounded by the fp16 check
        stored = load_file(zoo.root / WEIGHTS)
        assert all(torch.equal(stored[k], v) for k, v in load_file(run / "supernet.safetensors").items())
        evaluated = {r["id"]: r["top1"] for r in json.loads((run / "eval_test.json").read_text())["results"]}
        assert {e.id: e.top1 for e in zoo.entries} == evaluated


@pytest.mark.slow
def test_an_arch_that_is_no_entry_is_refused_an_entrys_arch_is_served(zoo16):
    entry = zoo16.entries[1]
    assert torch.equal(zoo16.subnet(entry.arch).stem[1].running_var, zoo16.subnet(entry).stem[1].running_var)
    other = next(a for a in PATHS if a not in PREFERRED)
    with pytest.raises(ValueError, match=rf"{other.id} is not an entry of zoo tiny-hytra: a HyTra path needs "
                                         r"BatchNorm statistics of its own"):
        zoo16.subnet(other)


def rewritten(zoo: Zoo, tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of the zoo whose weight file `change` edited, its sha256 recorded anew (the index otherwise intact)."""
    out = tmp_path / "zoo"
    shutil.copytree(zoo.root, out)
    tensors = load_file(out / WEIGHTS)
    change(tensors)
    save_file(tensors, out / WEIGHTS)
    doc = json.loads((out / INDEX).read_text())
    doc["weights"]["sha256"] = sha256_file(out / WEIGHTS)
    (out / INDEX).write_text(json.dumps(doc))
    return out


def _drop(prefix: str) -> Callable[[dict], None]:
    return lambda t: [t.pop(k) for k in [k for k in t if k.startswith(prefix)]]


def _reshape(key: str) -> Callable[[dict], None]:
    return lambda t: t.update({key: t[key][:-1]})


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "stray", "one key missing", "unknown key", "wrong shape"])
def test_missing_stray_or_broken_statistics_name_the_entry(zoo16, tmp_path, case):
    """A zoo is checked whole when it loads (zoo.store): one entry's broken statistics refuse the zoo."""
    entry = zoo16.entries[1].id
    name = entry if case != "stray" else "hytra-L4-00000000"
    change, message = {
        "missing": (_drop(f"paths.{entry}."), rf"entry {entry} has no BatchNorm statistics \(paths\.{entry}\.\*\)"),
        "stray": (lambda t: t.update({f"paths.{name}.stem.1.running_mean": torch.zeros(4)}),
                  rf"tensors paths\.{name}\.\* are BatchNorm statistics of no entry"),
        "one key missing": (_drop(f"paths.{entry}.stem.1.running_var"),
                            rf"entry {entry} do not fit its model: no statistics for stem\.1\.running_var"),
        "unknown key": (lambda t: t.update({f"paths.{entry}.layers.9.x.running_mean": torch.zeros(4)}),
                        rf"entry {entry} do not fit its model: statistics for layers\.9\.x\.running_mean, which"),
        "wrong shape": (_reshape(f"paths.{entry}.stem.1.running_mean"),
                        rf"entry {entry} do not fit its model: statistics stem\.1\.running_mean of shape \(3,\)"),
    }[case]
    with pytest.raises(ZooError, match=message):
        Zoo.load(rewritten(zoo16, tmp_path, change))


def test_a_vit_zoo_with_path_statistics_is_refused(tmp_path):
    folder = rewritten(Zoo.load(DEFAULT_ZOO), tmp_path, lambda t: t.update({"paths.x.norm.weight": torch.ones(2)}))
    with pytest.raises(ZooError, match=r"tensors paths\.x\.\* belong to no entry of the index with own weights \(a "
                                       r"ViT zoo keeps no BatchNorm statistics\)"):
        Zoo.load(folder)


# -- resume -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_killed_hytra_run_resumes_bit_for_bit(tmp_path, inputs):
    args = lambda out: train_args(out, *inputs, epochs="0.012")  # 10 steps, checkpoints every 4
    full = _cli(*args(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"  # killed right after its 2nd file commit: config.json, then the checkpoint at step 4
    killed = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, "2", "after", *args(out)], cwd=ROOT,
                            capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL and not (out / "supernet.safetensors").exists()
    resumed = _cli(*args(out))
    assert resumed.returncode == 0 and "resuming" in resumed.stdout and "from step 4" in resumed.stdout, resumed.stderr
    reference, again = load_file(tmp_path / "full" / "supernet.safetensors"), load_file(out / "supernet.safetensors")
    assert reference.keys() == again.keys() and all(torch.equal(again[k], v) for k, v in reference.items())


# -- serving ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(zoo16, tmp_path_factory) -> Iterator[Live]:
    app = create_app(zoo16.root, cache_dir=tmp_path_factory.mktemp("server-cache"))
    with serve(app) as url:
        yield Live(url, app.state.prezoo)


@pytest.mark.slow
def test_the_packaged_hytra_zoo_serves_its_entries_with_their_own_statistics(client, live, zoo16):
    small, middle = zoo16.entries[0], zoo16.entries[1]
    r = client.post("/api/specialize", json={"max_params": f"{(middle.params - 1) / 1000}K"})
    assert r.status_code == 200, r.text
    assert r.json()["entry"]["id"] == small.id
    x = torch.from_numpy(images(live.server, 1))
    with torch.no_grad():
        own, shared = (m(x)[0].numpy() for m in (zoo16.subnet(middle), zoo16.supernet.extract(middle.arch)))
    r = predict(client, ("0.png", png(seed=0), "image/png"), model=middle.id, top_k="10")
    assert r.status_code == 200, r.text
    served = {t["label"]: t["probability"] for t in r.json()["predictions"][0]["top"]}
    for logits, close in ((own, True), (shared, False)):
        p = np.exp(logits - logits.max())
        p /= p.sum()
        assert all(served[c] == pytest.approx(p[i], abs=1e-5) for i, c in enumerate(zoo16.classes)) is close
