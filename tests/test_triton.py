"""`python -m export triton`: the model repository's configs against Triton's ModelConfig schema and the ONNX graphs
beside them, its models against the zoo's own exports, entry selection, errors; the KServe manifest's keys.

No tritonserver runs here: the checks are the schema (protobuf text format parse) and the ONNX signatures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as triton

from export.__main__ import main
from export.cache import ExportCache
from export.onnx import run, session
from export.triton import CONFIG, MARKER, MODEL, PRECISIONS, TEMP, VERSION, model_config, remove_killed_runs
from server.images import ImageLimits
from tests.test_project import ROOT
from zoo.catalog import Catalog
from zoo.io import held_folder
from zoo.store import Zoo, shipped_zoos

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One export cache for the module: each entry's exports are built once."""
    return tmp_path_factory.mktemp("cache")


def export(zoo_dir: Path, cache_dir: Path, out: Path, *options: str) -> int:
    return main(["triton", "--zoo", str(zoo_dir), "--cache", str(cache_dir), "--out", str(out), *options])


def models(out: Path) -> list[str]:
    """The model folders of a repository (beside them: our marker, which Triton ignores)."""
    return sorted(p.name for p in out.iterdir() if p.name != MARKER)


def read_config(folder: Path) -> triton.ModelConfig:
    """config.pbtxt parsed against Triton's schema (a ParseError for any field or value it does not have)."""
    return text_format.Parse((folder / CONFIG).read_text(), triton.ModelConfig())


def check_model_folder(folder: Path, max_batch_size: int) -> triton.ModelConfig:
    """The folder is a valid Triton model whose config says what its ONNX graph says; returns the config."""
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == sorted([CONFIG, VERSION,
                                                                                    f"{VERSION}/{MODEL}"])
    config = read_config(folder)
    assert config.name == folder.name
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == max_batch_size
    assert config.HasField("dynamic_batching")
    graph = onnx.load(str(folder / VERSION / MODEL)).graph
    for declared, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [v.name for v in values]
        for tensor, value in zip(declared, values, strict=True):
            shape = value.type.tensor_type.shape.dim
            assert triton.DataType.Name(tensor.data_type) == ONNX_TO_TRITON[value.type.tensor_type.elem_type]
            assert shape[0].dim_param and not shape[0].HasField("dim_value")  # the batch axis: Triton's to fill
            assert list(tensor.dims) == [d.dim_value for d in shape[1:]]
    return config


def logits_at_max_batch(folder: Path, config: triton.ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(input, logits) of the repository's model.onnx in ONNX Runtime on a full batch shaped as the config says."""
    (pixels,), (logits,) = config.input, config.output
    x = np.random.default_rng(0).standard_normal((config.max_batch_size, *pixels.dims)).astype(np.float32)
    out = run(session(folder / VERSION / MODEL), x)
    assert out.shape == (config.max_batch_size, *logits.dims)
    return x, out


def test_every_entry_by_default_matches_its_onnx_graph_and_the_zoo_model(zoo_dir, zoo, cache_dir, tmp_path, capsys):
    out = tmp_path / "repo"
    assert export(zoo_dir, cache_dir, out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *(e.id for e in zoo.entries)])
    assert f"wrote {len(zoo.entries)} fp32 model(s)" in capsys.readouterr().out
    for entry in zoo.entries:
        config = check_model_folder(out / entry.id, ImageLimits().max_files)  # the server's images per request
        assert not config.HasField("optimization")
        x, logits = logits_at_max_batch(out / entry.id, config)
        with torch.inference_mode():
            expected = zoo.subnet(entry)(torch.from_numpy(x)).numpy()
        assert np.abs(logits - expected).max() < 1e-4


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_precision_and_tensorrt_by_id(zoo_dir, zoo, cache_dir, tmp_path, precision):
    """The fp16 and INT8 models: configs from their own graphs, logits of a freshly built export of the same kind."""
    entry, out = zoo.entries[1], tmp_path / "repo"
    assert export(zoo_dir, cache_dir, out, "--id", entry.id, "--id", entry.id, "--precision", precision,
                  "--max-batch-size", "8", "--tensorrt") == 0
    assert models(out) == [entry.id]
    config = check_model_folder(out / entry.id, 8)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == ({"precision_mode": "FP16"} if precision == "fp16" else {})
    x, logits = logits_at_max_batch(out / entry.id, config)
    own = ExportCache(tmp_path / "fresh-cache").file(zoo, entry, PRECISIONS[precision])
    np.testing.assert_array_equal(logits, run(session(own), x))


def test_budget_picks_the_entry_zoo_query_picks(zoo_dir, zoo, cache_dir, tmp_path):
    out = tmp_path / "repo"
    assert export(zoo_dir, cache_dir, out, "--max-params", str(zoo.entries[1].params)) == 0
    assert models(out) == [zoo.query(max_params=zoo.entries[1].params).id]


def test_several_zoos_are_one_repository_each_entry_exported_from_its_own(cache_dir, tmp_path, capsys):
    """The shipped zoos (ViT, HyTra, MBConv) as the server serves them: ids looked up across both, a budget chosen among
    both (`Catalog.query`), each model its own zoo's; the same zoo twice is refused (an id names one entry)."""
    zoos = Catalog([Zoo.load(folder) for folder in shipped_zoos().values()])
    vit, hytra = (next(e for z in zoos.zoos if z.family.name == f for e in z.entries) for f in ("vit", "hytra"))
    out = tmp_path / "repo"
    assert main(["triton", "--cache", str(cache_dir), "--out", str(out), "--id", vit.id, "--id", hytra.id]) == 0
    assert models(out) == sorted([vit.id, hytra.id])
    assert "of zoos hytra-fmnist, ladder-fmnist, mbconv-fmnist" in capsys.readouterr().out
    for entry in (vit, hytra):
        x, logits = logits_at_max_batch(out / entry.id, check_model_folder(out / entry.id, ImageLimits().max_files))
        with torch.inference_mode():
            expected = zoos.zoo_of(entry).subnet(entry)(torch.from_numpy(x)).numpy()
        assert np.abs(logits - expected).max() < 1e-4
    budget = "120K"
    assert main(["triton", "--cache", str(cache_dir), "--out", str(out), "--max-params", budget]) == 0
    assert models(out) == [zoos.query(max_params=budget).id]
    assert zoos.zoo_of(zoos.query(max_params=budget)).family.name == "mbconv"  # ViT, HyTra entries fit: less accurate
    ladder = str(shipped_zoos()["ladder-fmnist"])
    assert main(["triton", "--zoo", ladder, "--zoo", ladder, "--out", str(tmp_path / "twice")]) == 2
    assert "an id must name one entry" in capsys.readouterr().err and not (tmp_path / "twice").exists()


def test_an_earlier_repository_is_replaced_as_a_whole(zoo_dir, zoo, cache_dir, tmp_path):
    out = tmp_path / "repo"
    out.mkdir()  # an empty folder is a fine place
    first, second = zoo.entries[0].id, zoo.entries[2].id
    assert export(zoo_dir, cache_dir, out, "--id", first) == 0
    assert export(zoo_dir, cache_dir, out, "--id", second) == 0
    assert models(out) == [second]
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folder left beside it
    assert out.stat().st_mode & 0o777 == 0o755  # readable by a tritonserver running as another user


@pytest.mark.parametrize(("options", "message"), [
    (["--id", "e1-d1-00000000"], "no entry 'e1-d1-00000000'"),
    (["--max-params", "1K"], "no entry of zoo test-zoo fits max_params="),
    (["--id", "ID", "--max-params", "1M"], "by --id or by a budget, not both"),
])
def test_bad_selection_is_one_error_line_and_writes_nothing(zoo_dir, cache_dir, tmp_path, capsys, options, message):
    assert export(zoo_dir, cache_dir, tmp_path / "repo", *options) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "other folder"])
def test_out_that_is_not_a_repository_is_left_alone(zoo_dir, zoo, cache_dir, tmp_path, capsys, kind):
    out = tmp_path / "repo"
    if kind == "file":
        out.write_text("keep me")
    else:
        (out / "notes").mkdir(parents=True)
        (out / "notes" / "todo.txt").write_text("keep me")
    assert export(zoo_dir, cache_dir, out, "--id", zoo.entries[0].id) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to replace {out}") and err.count("\n") == 1
    assert "keep me" in (out.read_text() if kind == "file" else (out / "notes" / "todo.txt").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


def test_models_it_did_not_write_are_never_replaced(zoo_dir, zoo, cache_dir, tmp_path, capsys):
    """Issue 21: any folder of folders holding a config.pbtxt was taken for an earlier repository and deleted."""
    out = tmp_path / "other"
    (out / "mymodel" / "1").mkdir(parents=True)
    (out / "mymodel" / CONFIG).write_text('name: "mymodel"')
    (out / "mymodel" / "1" / "model.plan").write_bytes(b"a TensorRT engine")
    before = tree(out)
    assert export(zoo_dir, cache_dir, out, "--id", zoo.entries[0].id) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to replace {out}: it was not written by") and err.count("\n") == 1
    assert tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["other"]


@pytest.mark.parametrize(("added", "named"), [("mymodel/config.pbtxt", "mymodel"), ("ENTRY/2/model.onnx", "ENTRY/2"),
                                              ("notes.txt", "notes.txt")])
def test_a_repository_it_wrote_is_refused_once_something_was_added(zoo_dir, zoo, cache_dir, tmp_path, capsys, added,
                                                                   named):
    out, entry = tmp_path / "repo", zoo.entries[0].id
    assert export(zoo_dir, cache_dir, out, "--id", entry) == 0
    (out / added.replace("ENTRY", entry)).parent.mkdir(parents=True, exist_ok=True)
    (out / added.replace("ENTRY", entry)).write_text("keep me")
    before = tree(out)
    assert export(zoo_dir, cache_dir, out, "--id", zoo.entries[1].id) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to replace {out}: {named.replace('ENTRY', entry)} was not written by")
    assert tree(out) == before


def test_a_symlink_out_is_written_through_and_stays_a_symlink(zoo_dir, zoo, cache_dir, tmp_path, capsys):
    """Issue 21: the swap replaced the link with a folder and left the link beside it as `.link.XXXX`."""
    (tmp_path / "real").mkdir()
    (link := tmp_path / "link").symlink_to("real")
    for entry in zoo.entries[:2]:
        assert export(zoo_dir, cache_dir, link, "--id", entry.id) == 0
        assert link.is_symlink() and models(tmp_path / "real") == [entry.id]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert f"to {tmp_path / 'real'}: " in capsys.readouterr().out
    (dangling := tmp_path / "dangling").symlink_to("nowhere")
    assert export(zoo_dir, cache_dir, dangling, "--id", zoo.entries[0].id) == 2
    assert capsys.readouterr().err.startswith(f"error: refusing to write through {dangling}: it is a symlink to ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "real"]


STUCK_IN_A_BUILD = """import sys, time
import export.cache
def stuck(model, path, metadata, **options):
    path.write_bytes(b"half an ONNX file")
    print("building", flush=True)
    time.sleep(600)
export.cache.export_onnx = stuck
from export.__main__ import main
main(sys.argv[1:])
"""


def build_temps(cache: Path) -> list[Path]:
    """The export cache's temp folders of fp32 ONNX builds (ExportCache._build)."""
    return [p for p in cache.glob("*/*/.onnx.*") if p.is_dir()]


def test_what_a_killed_run_left_goes_at_the_next_run(zoo_dir, zoo, tmp_path):
    """Issue 21: kill -9 during `export triton` left `.repo.XXXX` beside --out and a build temp in its cache."""
    cache, out, entry = tmp_path / "cache", tmp_path / "out" / "repo", zoo.entries[0].id
    args = ["triton", "--zoo", str(zoo_dir), "--cache", str(cache), "--out", str(out), "--id", entry]
    run = subprocess.Popen([sys.executable, "-c", STUCK_IN_A_BUILD, *args], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    said = []
    try:
        for line in run.stdout:
            said.append(line)
            if line.strip() == "building":
                break
    finally:
        run.kill()
        run.wait()
    assert said and said[-1].strip() == "building", "".join(said)[-2000:]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".repo.")] and build_temps(cache)
    assert export(zoo_dir, cache, out, "--id", entry) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["repo"] and build_temps(cache) == []
    check_model_folder(out / entry, ImageLimits().max_files)


def test_temp_folders_in_use_or_not_ours_are_kept(tmp_path):
    out = tmp_path / "repo"
    live, backup = tmp_path / f".repo.{TEMP}live1234", tmp_path / ".repo.backup"
    for folder in (live, backup, dead := tmp_path / f".repo.{TEMP}dead1234", other := tmp_path / f".x.{TEMP}dead"):
        folder.mkdir()
        (folder / MARKER).write_text("{}")
    (stray := tmp_path / f".repo.{TEMP}nomarker").mkdir()
    (stray / "model.onnx").write_text("not ours")
    with held_folder(live):  # another run, writing
        assert remove_killed_runs(out) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, backup, other, stray))


def test_without_grpcio_the_command_says_what_to_install(zoo_dir, tmp_path):
    """tritonclient without its grpc half (a plain `pip install tritonclient`): one error line, not a traceback."""
    code = ("import sys; sys.modules['grpc'] = None; from export.__main__ import main; "
            f"sys.exit(main(['triton', '--zoo', {str(zoo_dir)!r}, '--out', {str(tmp_path / 'repo')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and 'pip install "tritonclient[grpc]"' in done.stderr
    assert done.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_the_schema_check_fails_on_a_misspelt_field(zoo_dir, zoo, cache_dir, tmp_path):
    out = tmp_path / "repo"
    assert export(zoo_dir, cache_dir, out, "--id", zoo.entries[0].id) == 0
    config = out / zoo.entries[0].id / CONFIG
    config.write_text(config.read_text().replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        read_config(config.parent)


def tiny_graph(path: Path, elem_type: int, shape: list[int | str]) -> Path:
    """A one-node ONNX model (Identity) with the given input/output element type and shape."""
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [value("x", elem_type, shape)], [value("y", elem_type, shape)])
    onnx.save(onnx.helper.make_model(graph), str(path))
    return path


def test_config_follows_the_graph_and_refuses_what_triton_cannot_batch(tmp_path):
    half = model_config("m", tiny_graph(tmp_path / "half.onnx", onnx.TensorProto.FLOAT16, ["n", 3]), 4, "fp16", False)
    assert [(triton.DataType.Name(t.data_type), list(t.dims)) for t in (*half.input, *half.output)] == [
        ("TYPE_FP16", [3]), ("TYPE_FP16", [3])]
    with pytest.raises(ValueError, match="element type INT64"):
        model_config("m", tiny_graph(tmp_path / "int.onnx", onnx.TensorProto.INT64, ["n", 3]), 4, "fp32", False)
    with pytest.raises(ValueError, match="dynamic batch axis"):
        model_config("m", tiny_graph(tmp_path / "fixed.onnx", onnx.TensorProto.FLOAT, [2, 3]), 4, "fp32", False)


def test_kserve_manifest_serves_triton_over_the_v2_protocol():
    manifest = yaml.safe_load((ROOT / "deploy" / "kserve-inferenceservice.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton"
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
