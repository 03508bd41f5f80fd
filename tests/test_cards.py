"""Model cards that work: a pushed card's python blocks run as they are (outside the checkout, against the local Hub),
model repos carry the ONNX files, `model-index` parses and round-trips through huggingface_hub (plain metric names,
top-1 and top-5, the test split), no card claims timm as its library (timm alone cannot load the model: tested), a model
pushed from a zoo on the Hub names that zoo repo as its `base_model`, a whole-zoo push has its own card and Pareto plot,
and a lone model.safetensors describes itself. Uses the shipped zoo (real weights, real test-set size and
latencies)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open
from safetensors.torch import load_file

from export.__main__ import main as export_main
from export.hf import model_card, write_hf_folder
from export.hub import push_folder
from server.images import to_input
from server.state import PreZooServer, ServerConfig
from tests.hub_server import LocalHub
from zoo import PreZooViT, Zoo
from zoo.io import sha256_file
from zoo.store import DEFAULT_ZOO

ROOT = Path(__file__).resolve().parent.parent
HUB_TOKEN = "test-admin-token"
MODEL_REPO_FILES = {"README.md", "config.json", "model.safetensors", "model.onnx", "model.int8.onnx", "model.fp16.onnx"}


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return Zoo.load(DEFAULT_ZOO)


@pytest.fixture(scope="module")
def entry(zoo):
    return zoo.query(max_params="0.2M")


@pytest.fixture(scope="module")
def server(zoo, tmp_path_factory):
    server = PreZooServer(zoo, tmp_path_factory.mktemp("server-cache"), ServerConfig(admin_token="admin",
                                                                                      hub_token=HUB_TOKEN))
    yield server
    server.close()


def repo_id(kind: str) -> str:
    return f"prezoo-cards/{kind}-{uuid.uuid4().hex[:8]}"


def repo_files(hub: LocalHub, repo: str) -> dict[str, bytes]:
    stored = hub.repos[repo]
    return stored.commits[stored.refs["main"]]


def commits_to(hub: LocalHub, repo: str) -> int:
    return sum(r.method == "POST" and r.path.startswith(f"/api/models/{repo}/commit/") for r in hub.requests_log)


def python_blocks(card: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", card, flags=re.DOTALL | re.MULTILINE)


def run_code(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run code as a user would with PreZoo installed: from a folder outside the checkout, `zoo` importable
    (PYTHONPATH = the checkout, like an installed prezoo), the session's local Hub."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # HF_ENDPOINT, HF_HOME, HF_HUB_CACHE: set by conftest
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run_block(code: str, cwd: Path) -> str:
    """A card's code, run as a user would (`run_code`): its stdout."""
    done = run_code(code, cwd)
    assert done.returncode == 0, f"card code failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
    return done.stdout


def front_matter(card: str) -> dict:
    """The card's YAML metadata as plain data."""
    return yaml.safe_load(card.split("---\n", 2)[1])


def top_line(output: str) -> tuple[str, float]:
    """'Trouser: 0.912' -> ('Trouser', 0.912): the first label a block printed and its probability."""
    label, probability = output.splitlines()[0].rsplit(": ", 1)
    return label, float(probability)


def expected_top(zoo: Zoo, entry) -> tuple[str, float]:
    """What the server's own preprocessing and the entry's weights say about the cards' stand-in picture."""
    from export.hf import STAND_IN

    scope: dict = {}
    exec("from PIL import Image, ImageDraw\n" + STAND_IN, scope)
    x = torch.from_numpy(to_input(scope["image"], zoo.preprocessing)[None])
    with torch.no_grad():
        probabilities = zoo.subnet(entry)(x).softmax(-1)[0]
    return zoo.classes[int(probabilities.argmax())], float(probabilities.max())


def test_pushed_model_card_runs_as_is_and_the_repo_holds_the_onnx_files(zoo, entry, server, local_hub, tmp_path):
    repo = repo_id("model")
    server.push(repo, entry)
    assert set(repo_files(local_hub, repo)) == MODEL_REPO_FILES  # no cache checksums or use markers either

    card = ModelCard.load(repo)
    assert (card.data.library_name, card.data.license, card.data.model_name) == ("prezoo", "apache-2.0", repo)
    assert "prezoo" in card.data.tags and "model_hub_mixin" not in card.data.tags  # not pushed by the mixin
    assert "timm" not in card.data.tags and card.data.base_model is None  # a local zoo: no zoo repo to name
    top1, top5 = card.data.eval_results
    assert [(r.metric_name, r.metric_type, r.metric_value) for r in (top1, top5)] == [
        ("top-1 accuracy", "accuracy", entry.top1), ("top-5 accuracy", "accuracy", entry.top5)]
    assert {(r.task_type, r.dataset_type, r.dataset_name, r.dataset_split) for r in (top1, top5)} == {
        ("image-classification", "zalando-datasets/fashion_mnist", "Fashion-MNIST", "test")}
    rebuilt = ModelCardData(model_name=repo, eval_results=card.data.eval_results).to_dict()["model-index"]
    assert rebuilt == front_matter(card.content)["model-index"]  # huggingface_hub writes back what it read
    low, high = zoo.top1_interval(entry)  # the interval: in the text, not in a metric's name
    assert f"{entry.top1:.2f}% (95% interval {low:.2f}–{high:.2f})" in card.text
    assert not re.findall(r"https?://|DIR_OR_REPO|ORG/NAME", card.content)  # no invented URLs, no placeholders

    timm_code, onnx_code = python_blocks(card.content)
    assert f'"hf-hub:{repo}"' in timm_code and f'"{repo}", "model.onnx"' in onnx_code
    label, probability = expected_top(zoo, entry)
    for code in (timm_code, onnx_code):
        got_label, got_probability = top_line(run_block(code, tmp_path))
        assert got_label == label and got_probability == pytest.approx(probability, abs=2e-3)


def test_timm_alone_cannot_load_a_pushed_model_so_no_card_claims_it(entry, server, tmp_path):
    """Why the cards' library is "prezoo": timm's own Hub snippet, without `import zoo`, fails on the pushed repo (the
    same call after `import zoo` is the cards' snippet, run above)."""
    repo = repo_id("timm-alone")
    server.push(repo, entry)
    done = run_code(f'import timm\ntimm.create_model("hf-hub:{repo}", pretrained=True)', tmp_path)
    assert done.returncode != 0 and "Unknown model (prezoo_vit)" in done.stderr, done.stderr[-2000:]


def test_a_model_pushed_beside_its_zoo_names_the_zoo_repo_as_its_base_model(zoo, zoo_dir, local_hub, tmp_path,
                                                                            monkeypatch, capsys):
    """--zoo-repo-id (checked: the repo must hold the same zoo), or a --zoo that is a Hub repo id, becomes the model
    card's base_model; a repo holding another zoo, or no zoo, is refused before anything is pushed."""
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    zoo_repo, other_zoo, not_a_zoo = repo_id("base-zoo"), repo_id("other-zoo"), repo_id("not-a-zoo")
    cache = ["--cache", str(tmp_path / "cache")]
    assert export_main(["push", "--zoo", str(zoo.root), "--whole-zoo", "--repo-id", zoo_repo, *cache]) == 0
    push_folder(zoo_dir, other_zoo)  # tests/zoo_fixtures' zoo: other weights
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "README.md").write_text("# a model repo, not a zoo\n")
    push_folder(tmp_path / "plain", not_a_zoo)
    named, pulled = repo_id("named"), repo_id("pulled")
    assert export_main(["push", "--zoo", str(zoo.root), "--max-params", "0.2M", "--repo-id", named,
                        "--zoo-repo-id", zoo_repo, *cache]) == 0
    assert export_main(["push", "--zoo", zoo_repo, "--max-params", "0.2M", "--repo-id", pulled, *cache]) == 0
    capsys.readouterr()
    for repo in (named, pulled):
        card = ModelCard.load(repo)
        assert card.data.base_model == zoo_repo and f"Hub repo `{zoo_repo}`" in card.text, repo
    for wrong, why in ((other_zoo, "holds another zoo"), (not_a_zoo, "holds no PreZoo zoo"), (repo_id("gone"), "")):
        refused = repo_id("refused")
        assert export_main(["push", "--zoo", str(zoo.root), "--max-params", "0.2M", "--repo-id", refused,
                            "--zoo-repo-id", wrong, *cache]) == 2
        assert why in capsys.readouterr().err and refused not in local_hub.repos


def test_pushing_the_same_model_twice_uploads_nothing_and_leaves_the_export_cache_alone(zoo, entry, server,
                                                                                        local_hub):
    repo = repo_id("again")
    server.push(repo, entry)
    folder = server.exports.get(zoo, entry, "safetensors")
    cached = {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file() and p.name != ".last-used"}
    server.push(repo, entry)
    assert commits_to(local_hub, repo) == 1
    assert {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file() and p.name != ".last-used"} == cached
    assert (folder / "README.md").read_text() == model_card(zoo, entry)  # the export's own card, not the repo's
    assert json.loads((folder / "sha256.json").read_text())["README.md"] == cached["README.md"]


def test_export_folder_card_runs_in_the_folder(zoo, entry, server, tmp_path):
    folder = server.exports.get(zoo, entry, "safetensors")
    for name in ("README.md", "config.json", "model.safetensors"):  # what a user downloads
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    [code] = python_blocks((tmp_path / "README.md").read_text())
    assert top_line(run_block(code, tmp_path))[0] == expected_top(zoo, entry)[0]


def test_whole_zoo_push_has_its_own_card_and_plot_and_leaves_the_zoo_folder_alone(zoo, local_hub, tmp_path,
                                                                                 monkeypatch, capsys):
    def zoo_folder() -> dict[str, tuple[str, int]]:
        return {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in zoo.root.iterdir()}

    before = zoo_folder()
    repo = repo_id("zoo")
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    assert export_main(["push", "--zoo", str(zoo.root), "--whole-zoo", "--repo-id", repo,
                        "--cache", str(tmp_path / "cache")]) == 0
    assert f"pushed zoo {zoo.name}" in capsys.readouterr().out
    assert zoo_folder() == before
    files = repo_files(local_hub, repo)
    assert set(files) == {"README.md", "pareto.png", "zoo.json", "supernet.safetensors"}
    assert files["pareto.png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert not any((tmp_path / "cache").iterdir())  # the staging folder is gone

    card = ModelCard.load(repo)
    assert "](pareto.png)" in card.text and not re.findall(r"https?://", card.content)
    assert card.data.library_name == "prezoo" and "timm" not in card.data.tags  # timm cannot load a zoo repo
    assert (card.data.license, card.data.base_model) == ("apache-2.0", None)
    for e in zoo.entries:
        assert f"| `{e.id}` | {e.params:,} |" in card.text
        assert f"{e.top1:.2f}% (95% interval {zoo.top1_interval(e)[0]:.2f}–" in card.text
    [code] = python_blocks(card.content)
    assert f'zoo.Zoo.load("{repo}")' in code
    chosen, _, rest = run_block(code, tmp_path).partition(" ")
    budget = re.search(r'max_params="(\w+)"', code).group(1)
    assert chosen == zoo.query(max_params=budget).id and rest.rsplit(": ", 2)[1] in zoo.classes

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    export_main(["push", "--zoo", str(zoo.root), "--whole-zoo", "--repo-id", repo, "--cache", str(tmp_path / "c2")])
    assert commits_to(local_hub, repo) == 1  # the same card and plot bytes: nothing to upload


def test_a_lone_safetensors_file_describes_itself(zoo, entry, server, tmp_path):
    lone = tmp_path / "weights.safetensors"
    lone.write_bytes((server.exports.get(zoo, entry, "safetensors") / "model.safetensors").read_bytes())
    with safe_open(lone, framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["prezoo.arch_id"] == entry.id
    assert json.loads(meta["prezoo.labels"]) == zoo.classes
    assert json.loads(meta["prezoo.preprocessing"]) == zoo.preprocessing
    model = PreZooViT(space=json.loads(meta["prezoo.space"]), arch=json.loads(meta["prezoo.arch"]))
    model.load_state_dict(load_file(lone))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), zoo.subnet(entry)(x))


def test_the_same_model_is_written_as_the_same_bytes(zoo, entry, tmp_path):
    """safetensors orders its metadata by a hash map; a rebuilt export must still match byte for byte."""
    first, second = (write_hf_folder(zoo, entry, tmp_path / name) for name in ("first", "second"))
    for name in ("model.safetensors", "config.json", "README.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_cli_model_push_from_fresh_export_caches_twice_commits_once(zoo, entry, local_hub, tmp_path, monkeypatch,
                                                                    capsys):
    repo = repo_id("cli")
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    for run in ("first", "second"):  # each run exports everything anew (its own default temporary cache)
        assert export_main(["push", "--zoo", str(zoo.root), "--max-params", "0.2M", "--repo-id", repo]) == 0
        assert f"pushed {entry.id}" in capsys.readouterr().out, run
    assert set(repo_files(local_hub, repo)) == MODEL_REPO_FILES and commits_to(local_hub, repo) == 1


def test_cost_axes_resolve_both_ends_of_a_zoo_spanning_two_decades():
    """A zoo from 13k to 1.2M parameters: the slider steps finely enough to choose between the smallest entries
    (13.2k, 19.7k, 22.1k), and the Pareto plots use a log axis so those entries do not sit on one pixel."""
    from matplotlib.figure import Figure

    from export.hf import scale_cost_axis
    from server.ui import SliderScale

    values = [13_200, 19_700, 22_100, 226_000, 1_200_000]
    slider = SliderScale.of("parameters", values)
    assert slider.unit == "M" and slider.step * slider.factor <= 13_200 / 10
    assert slider.minimum * slider.factor <= 13_200 / 2 + slider.step * slider.factor
    narrow_slider = SliderScale.of("parameters", [150_000, 600_000])
    assert narrow_slider.step * narrow_slider.factor == 1_000  # a narrow zoo steps as before
    wide, narrow = Figure().add_subplot(), Figure().add_subplot()
    scale_cost_axis(wide, values)
    scale_cost_axis(narrow, [150_000, 600_000])
    assert (wide.get_xscale(), narrow.get_xscale()) == ("log", "linear")
