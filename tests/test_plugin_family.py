"""A model family from outside `zoo/` (issue 22): a one-hidden-layer MLP whose supernet slices three widths, defined
and registered in this module (`register_family`) with nothing else edited, goes through the whole pipeline:
selected (by a stand-in selector), trained (`training.train`), evaluated, packaged, loaded (`Zoo.load`), queried by
budget, exported (ONNX, the HF folder), loaded back through timm and its Hub class, served (`/api/predict`),
fine-tuned and searched. Its spaces are files naming the family: it has no built-in one."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.cache import FILES, ExportCache
from server.app import create_app
from tests.test_server import png, predict, serve
from training.__main__ import main as training_main
from training.finetune import FinetuneConfig, finetune
from training.package import package_run
from training.preferred import Buckets, Candidate, pick_preferred, preferred_doc, write_preferred
from training.search import SEARCHES, SearchConfig
from training.train import TrainConfig, train
from zoo import BudgetError, Zoo
from zoo.family import FAMILIES, Family, register_family, space_by_name
from zoo.layers import reset_classifier
from zoo.pretrained import PreZooHub
from zoo.records import SpaceRecord, positive_int

NAME = "mlp"


# -- the family: space, arch, cost, modules, supernet, Hub class ----------------------------------------------------
@dataclass(frozen=True)
class MLPSpace(SpaceRecord):
    family: ClassVar[str] = NAME
    name: str
    widths: tuple[int, ...] = (8, 16, 32)
    img_size: int = 8
    in_chans: int = 3
    num_classes: int = 10
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(positive_int("widths[]", w) for w in self.widths))

    def validate(self, arch: Any) -> MLPArch:
        if not isinstance(arch, MLPArch) or arch.width not in self.widths:
            raise ValueError(f"{arch!r} is not an arch of space {self.name}: widths {list(self.widths)}")
        return arch


@dataclass(frozen=True)
class MLPArch:
    family: ClassVar[str] = NAME
    width: int

    @property
    def id(self) -> str:
        return f"mlp-w{self.width}"

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def describe(self) -> str:
        return f"W{self.width}"

    @classmethod
    def from_dict(cls, d: Any) -> MLPArch:
        if not isinstance(d, dict) or set(d) != {"width"}:
            raise ValueError(f"an MLP architecture is {{'width': int}}, got {d!r}")
        return cls(positive_int("width", d["width"]))


def _inputs(space: MLPSpace) -> int:
    return space.in_chans * space.img_size**2


def params(space: MLPSpace, arch: MLPArch) -> int:
    return (_inputs(space) + 1) * arch.width + (arch.width + 1) * space.num_classes


def flops(space: MLPSpace, arch: MLPArch) -> int:
    return (_inputs(space) + space.num_classes) * arch.width


class MLPNet(nn.Module):
    family: ClassVar[str] = NAME
    timm_name: ClassVar[str] = "plugin_mlp"
    first_conv: ClassVar[str] = "fc1"
    global_pool: ClassVar[str] = ""  # timm's name for none

    def __init__(self, space: MLPSpace, arch: MLPArch) -> None:
        super().__init__()
        self.space, self.arch = space, arch
        self.fc1 = nn.Linear(_inputs(space), arch.width)
        self.head = nn.Linear(arch.width, space.num_classes)
        self.num_classes, self.in_chans, self.num_features = space.num_classes, space.in_chans, arch.width

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        reset_classifier(self, num_classes, global_pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.fc1(x.flatten(1))))


class MLPSupernet(nn.Module):
    """The widest MLP; a width is the first rows of fc1 and the first columns of the head."""

    def __init__(self, space: MLPSpace, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.space = space
        self.fc1 = nn.Linear(_inputs(space), max(space.widths))
        self.head = nn.Linear(max(space.widths), space.num_classes)

    def _sliced(self, arch: MLPArch) -> dict[str, Tensor]:
        w = self.space.validate(arch).width
        return {"fc1.weight": self.fc1.weight[:w], "fc1.bias": self.fc1.bias[:w],
                "head.weight": self.head.weight[:, :w], "head.bias": self.head.bias}

    def forward(self, x: Tensor, arch: MLPArch) -> Tensor:
        p = self._sliced(arch)
        return F.linear(F.relu(F.linear(x.flatten(1), p["fc1.weight"], p["fc1.bias"])), p["head.weight"],
                        p["head.bias"])

    def extract(self, arch: MLPArch) -> MLPNet:
        net = MLPNet(self.space, arch).to(self.fc1.weight.device)
        net.load_state_dict({k: v.detach().clone() for k, v in self._sliced(arch).items()})
        return net.eval()


SPACE = MLPSpace("plugin-mlp")
TAGS = ["image-classification", "mlp", "timm", "prezoo"]


class PreZooMLP(MLPNet, PreZooHub, library_name="timm", tags=[*TAGS], pipeline_tag="image-classification"):
    hub_tags = TAGS
    weights_layout = "`MLPNet`'s parameter names (fc1, head)"
    space_from_dict, arch_from_dict = MLPSpace.from_dict, MLPArch.from_dict
    timm_default = (SPACE, MLPArch(32))

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None, preprocessing: dict | None = None,
                 num_classes: int | None = None, in_chans: int | None = None, img_size: int | None = None,
                 global_pool: str | None = None, **timm_kwargs: Any) -> None:
        source, a = self._source(space, arch, timm_kwargs, img_size=img_size, in_chans=in_chans,
                                 global_pool=global_pool)
        super().__init__(source, a)
        self._configure(source, labels, preprocessing, num_classes)

    @classmethod
    def _fixed(cls, source: MLPSpace) -> dict[str, Any]:
        return {"img_size": source.img_size, "in_chans": source.in_chans, "global_pool": cls.global_pool}


def _extremes(space: MLPSpace) -> tuple[MLPArch, MLPArch]:
    return MLPArch(min(space.widths)), MLPArch(max(space.widths))


def _cost_range(space: MLPSpace) -> tuple[tuple[int, int], tuple[int, int]]:
    lo, hi = _extremes(space)
    return (params(space, lo), params(space, hi)), (flops(space, lo), flops(space, hi))


FAMILY = register_family(Family(
    NAME, MLPSpace.from_dict, MLPArch.from_dict, {}, params, flops, MLPSupernet,
    "multiply-accumulates of fc1 and the head", title="MLP", noun="multilayer perceptron",
    origin="width of a test-only MLP", describe_arch=lambda s, a: f"One hidden layer of {a.width} units.",
    layer_headers=("layer", "width"), layer_rows=lambda s, a: [[0, a.width]],
    describe_choices=lambda s: f"  widths {list(s.widths)}\n  input {s.in_chans}x{s.img_size}²  classes "
                               f"{s.num_classes}",
    cost_range=_cost_range, pretrained=PreZooMLP, sampling_group=lambda a: (),
    random_arch=lambda s, rng: MLPArch(rng.choice(s.widths)), extreme_archs=_extremes))


# -- the pipeline -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    """Select every width into its own bucket, train a few steps on them, evaluate, package."""
    root = tmp_path_factory.mktemp("plugin")
    space_file = root / "mlp.json"
    space_file.write_text(json.dumps({"family": NAME, **SPACE.to_dict()}))
    buckets = Buckets.default(SPACE, "params")
    candidates = [Candidate(a, params(SPACE, a), flops(SPACE, a), float(a.width)) for a in map(MLPArch, SPACE.widths)]
    doc = preferred_doc(SPACE, {"method": "every width", "bucket_by": "params"}, {}, buckets,
                        pick_preferred(candidates, buckets, "params", top_n=1), family=NAME)
    preferred = write_preferred(doc, root / "select")
    run = train(TrainConfig(space=str(space_file), preferred=str(preferred), data="synthetic:512", augment=False,
                            epochs=1, batch_size=32, warmup_epochs=0, out=str(root / "run"), progress=False))
    assert training_main(["evaluate", "--run", str(run)]) == 0
    package_run(run, root / "zoo", "plugin-mlp", progress=False)
    return root / "zoo"


@pytest.fixture(scope="module")
def zoo(zoo_dir) -> Zoo:
    return Zoo.load(zoo_dir)


def test_the_family_is_found_by_name_and_by_its_space_files(tmp_path):
    assert FAMILIES[NAME] is FAMILY and list(FAMILIES)[:2] == ["vit", "hytra"]
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"family": NAME, **SPACE.to_dict()}))
    assert space_by_name(str(path)) == (FAMILY, SPACE)
    with pytest.raises(ValueError, match="already registered"):
        register_family(FAMILY)
    with pytest.raises(ValueError, match="must name it as their family"):
        register_family(dataclasses.replace(FAMILY, name="other"))


def test_a_zoo_of_the_family_loads_and_answers_budgets(zoo):
    doc = json.loads((zoo.root / "zoo.json").read_text())
    assert doc["family"] == NAME and zoo.family is FAMILY and zoo.space == SPACE
    assert sorted(e.arch.width for e in zoo.entries) == list(SPACE.widths)
    assert all(e.params == params(SPACE, e.arch) and e.top1 is not None for e in zoo.entries)
    entry = zoo.query(max_params=params(SPACE, MLPArch(16)))
    assert entry.arch.width <= 16
    with pytest.raises(BudgetError):
        zoo.query(max_params="1K")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(zoo.subnet(entry)(x), zoo.supernet(x, entry.arch))


def test_exports_run_and_load_back_through_timm_and_the_hub_class(zoo, tmp_path):
    cache, entry = ExportCache(tmp_path / "cache"), zoo.entries[-1]
    model = zoo.subnet(entry)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    onnx_file = cache.get(zoo, entry, "onnx") / FILES["onnx"][0]
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixel_values": x.numpy()})[0], expected, rtol=1e-5, atol=1e-5)
    assert session.get_modelmeta().custom_metadata_map["prezoo.family"] == NAME
    folder = cache.get(zoo, entry, "safetensors")
    for loaded in (PreZooMLP.from_pretrained(folder), timm.create_model(f"local-dir:{folder}", pretrained=True)):
        with torch.no_grad():
            np.testing.assert_allclose(loaded.eval()(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert "One hidden layer of" in (folder / "README.md").read_text()


def test_the_server_predicts_with_an_entry_of_the_family(zoo, tmp_path):
    import httpx

    with serve(create_app(zoo, cache_dir=tmp_path / "server-cache")) as url, httpx.Client(base_url=url,
                                                                                         timeout=120) as client:
        assert client.get("/api/zoo").json()["family"] == NAME
        r = predict(client, ("x.png", png(mode="RGB"), "image/png"), model=zoo.entries[0].id, top_k="3")
        assert r.status_code == 200, r.text
        assert {t["label"] for t in r.json()["predictions"][0]["top"]} <= set(zoo.classes)


def test_an_export_of_the_family_fine_tunes(zoo, tmp_path):
    folder = ExportCache(tmp_path / "cache").get(zoo, zoo.entries[0], "safetensors")
    result = finetune(FinetuneConfig(model=str(folder), data="synthetic:64", val_size=16, epochs=1, batch_size=16,
                                     augment=False, out=str(tmp_path / "ft"), progress=False))
    assert type(result.model) is PreZooMLP and "PreZoo MLP" in (result.out / "README.md").read_text()
    assert PreZooMLP.from_pretrained(result.out).arch == zoo.entries[0].arch


def test_search_draws_from_the_family_and_evolution_needs_its_mutation(zoo):
    cfg = SearchConfig(evaluations=3, population=3, max_params=params(SPACE, MLPArch(32)) + 1)
    result = SEARCHES["random"](SPACE, lambda a: float(a.width), cfg, progress=False)
    assert result.best == MLPArch(32) and result.evaluations == 3
    with pytest.raises(ValueError, match="the MLP family cannot: use random search"):
        SEARCHES["evolution"](SPACE, lambda a: 0.0, cfg, progress=False)
    with pytest.raises(ValueError, match=r"which the MLP family cannot list \(Family.build_arch\): use random search"):
        SEARCHES["enas"](SPACE, lambda a: 0.0, cfg, progress=False)
