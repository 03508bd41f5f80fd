"""timm's model contract on PreZoo's registered names (issue 22, item 5). The slow test runs tests/test_models.py of
the pinned timm's sdist, restricted to `prezoo_*` by tests/timm_contract_plugin.py, which also says which of timm's
rules each family is held to: what timm's tooling expects of any `timm.create_model` name (default cfgs, forward and
backward, TorchScript, torch.fx, feature extraction, intermediates and pruning). The fast ones check what each name
builds by default against the shipped zoos, and the parts of the contract timm's file only touches on.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import timm
import torch

from zoo.family import FAMILIES

REPO = Path(__file__).resolve().parent.parent
TIMM_VERSION = importlib.metadata.version("timm")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prezoo-timm-tests"

# what each family must run: timm's per-model tests for its kin (tests/timm_contract_plugin.py)
COMMON = {"test_model_forward", "test_model_backward", "test_model_forward_torchscript", "test_model_forward_fx",
          "test_model_backward_fx", "test_model_forward_fx_torchscript", "test_model_forward_intermediates",
          "test_model_forward_intermediates_features", "test_prune_intermediate_layers_contract"}
EXCLUDED_BY = "excluded by PreZoo: "  # the plugin's skip reasons (its EXCLUDE)
EXPECTED = {"prezoo_vit": COMMON | {"test_model_default_cfgs_non_std"},
            "prezoo_hytra": COMMON | {"test_model_default_cfgs", "test_model_forward_features"},
            "prezoo_mbconv": COMMON | {"test_model_default_cfgs", "test_model_forward_features"}}


def timm_tests() -> Path:
    """timm's tests folder and pytest config, from its sdist, fetched once per timm version."""
    root = CACHE / f"timm-{TIMM_VERSION}"
    if (root / "tests" / "test_models.py").is_file():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                        f"timm=={TIMM_VERSION}", "-d", tmp], check=True)
        top = f"timm-{TIMM_VERSION}/"
        with tarfile.open(Path(tmp) / f"timm-{TIMM_VERSION}.tar.gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith((top + "tests/", top + "pyproject.toml"))]
            tar.extractall(tmp, members=members, filter="data")
        try:
            os.replace(Path(tmp) / top, root)
        except OSError:  # another run got there first
            if not root.is_dir():
                raise
    return root


def run_timm_tests(root: Path, junit: Path) -> tuple[dict[tuple[str, str], tuple[str, str]], str]:
    """{(test function, model name): (passed | failed | skipped, why)} and pytest's output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    env.pop("GITHUB_ACTIONS", None)  # timm excludes more models on GitHub's runners
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_models.py", "-p", "timm_contract_plugin",
                           "-p", "no:cacheprovider", "-q", "-rfEs", f"--junitxml={junit}"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    assert junit.is_file(), proc.stdout[-4000:] + proc.stderr[-4000:]  # pytest stopped before running any test
    results = {}
    for case in ET.parse(junit).iter("testcase"):
        model = case.find("properties/property[@name='model_name']").get("value")
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        kind = "passed" if outcome is None else "skipped" if outcome.tag == "skipped" else "failed"
        results[case.get("name").partition("[")[0], model] = (kind, "" if outcome is None else outcome.get("message"))
    return results, proc.stdout + proc.stderr


@pytest.mark.slow
def test_timm_model_tests_pass_on_prezoo_names(tmp_path):
    """Each PreZoo name runs every per-model test timm's file runs for its kin (tests/timm_contract_plugin.py), and
    passes it, but for the plugin's own exclusions, skipped with their reasons."""
    results, output = run_timm_tests(timm_tests(), tmp_path / "junit.xml")
    print(f"timm {TIMM_VERSION} tests/test_models.py on PreZoo's names: "
          f"{dict(collections.Counter(outcome for outcome, _ in results.values()))}")
    ran = collections.defaultdict(set)
    for test, model in results:
        ran[model].add(test)
    assert {m: ran[m] for m in EXPECTED} == EXPECTED, output[-4000:]
    for (test, model), (outcome, why) in sorted(results.items()):
        print(f"{test}[{model}]: {outcome} {why}")
        assert outcome == "passed" or outcome == "skipped" and why.startswith(EXCLUDED_BY), output[-8000:]


def test_each_name_builds_its_shipped_zoos_most_accurate_entry():
    """A registered name's default model and cfg are a shipped zoo's best entry and that zoo's preprocessing."""
    for path in sorted((REPO / "zoos").glob("*/zoo.json")):
        doc = json.loads(path.read_text())
        hub = FAMILIES[doc.get("family", "vit")].pretrained
        space, arch = hub.timm_default
        assert space == hub.space_from_dict(doc["space"]), path
        assert arch == hub.arch_from_dict(max(doc["entries"], key=lambda e: e["top1"])["arch"]), path
        cfg, pre = timm.models.get_pretrained_cfg(hub.timm_name).to_dict(), doc["preprocessing"]
        assert cfg["input_size"] == [pre["in_chans"], pre["img_size"], pre["img_size"]]
        assert cfg["num_classes"] == len(doc["classes"])
        assert (list(cfg["mean"]), list(cfg["std"]), cfg["crop_pct"], cfg["interpolation"]) == \
            (pre["mean"], pre["std"], pre["crop_pct"], pre["interpolation"])
        model = timm.create_model(hub.timm_name)
        assert type(model) is hub and model.arch == arch and model.space == space


@pytest.mark.parametrize("name", ["prezoo_vit", "prezoo_hytra", "prezoo_mbconv"])
def test_factory_arguments_as_timm_takes_them(name):
    model = timm.create_model(name, device="meta", dtype=torch.bfloat16)
    assert {(t.device.type, t.dtype) for t in model.parameters()} == {("meta", torch.bfloat16)}
    space, arch = type(model).timm_default
    with pytest.raises(TypeError, match="unexpected argument"):
        timm.create_model(name, not_a_model_arg=1)
    with pytest.raises(TypeError, match="together"):
        timm.create_model(name, space=space.to_dict())
    assert timm.create_model(name, space=space.to_dict(), arch=arch.to_dict()).arch == arch


@pytest.mark.parametrize("name", ["prezoo_vit", "prezoo_hytra", "prezoo_mbconv"])
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out, [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing()
    torch.testing.assert_close(grads(), plain)


def test_hytra_feature_maps_without_pooling():
    maps = timm.create_model("prezoo_hytra", num_classes=0, global_pool="")
    assert maps(torch.randn(1, 1, 28, 28)).shape == (1, maps.num_features, *maps.pretrained_cfg["pool_size"])
    maps.reset_classifier(3)  # a head pools again
    assert maps.global_pool == "avg" and maps(torch.randn(1, 1, 28, 28)).shape == (1, 3)
    with pytest.raises(ValueError, match="without a head"):
        timm.create_model("prezoo_hytra", global_pool="")
