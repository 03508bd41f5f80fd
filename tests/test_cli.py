"""The command lines and the README's REST block, as users meet them: every `--help` answers without importing torch,
`prezoo COMMAND` runs `python -m PACKAGE ...`, `import zoo` still registers `prezoo_vit` in timm, `export get --id`,
`zoo get|profile` naming their new home, budgets without a unit, a --zoo folder that does
not exist, `train` resuming (and refusing changed settings), `search` writing results and a plot, `package` saying
why it evaluates again, FLOPs printed in one unit (MACs), GET /api/samples, /docs example bodies that validate, and
the README's curl lines run as written against `python -m server`."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

import prezoo.__main__ as prezoo
from export.cache import ExportCache
from server.app import create_app
from server.state import ServerConfig
from tests.test_server import ADMIN, HUB_TOKEN, serve
from tests.test_train import _train_args
from tests.test_train import preferred as preferred  # a fixture: the `mini` selection to train on
from tests.zoo_fixtures import MINI, make_zoo
from training.train import Checkpoint
from zoo.budget import FLOPS_LABEL, human, parse_count
from zoo.store import Zoo

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "timm", "gradio", "onnxruntime", "matplotlib", "fastapi"}
HELP_BOUND_S = 2.0  # the goal is 1 s (measured ~0.3 s); the bound leaves room for a loaded test machine


def cli(module: str, *args: str | Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kwargs)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return make_zoo(tmp_path_factory.mktemp("zoo"))


# -- --help: at once, without torch ----------------------------------------------------------------------------------

COMMANDS = [("zoo",), ("training",), ("export",), ("server",), ("prezoo",),
            *[("zoo", c) for c in ("spaces", "list", "import-official")],
            *[("training", c) for c in ("select", "darts", "edmips", "variants", "train", "evaluate", "search", "pick",
                                        "package", "finetune", "tune")],
            *[("export", c) for c in ("get", "profile", "sizes", "push", "triton")],
            *[("prezoo", c) for c in ("serve", "list", "get", "train")]]  # one per package: every one, in-process below


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_answers_at_once_without_importing_torch(command):
    start = time.perf_counter()
    out = cli(command[0], *command[1:], "--help", env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    seconds = time.perf_counter() - start
    usage = "usage: prezoo" if command == ("prezoo",) else "usage: python -m"
    assert out.returncode == 0 and out.stdout.startswith(usage), out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert not HEAVY & imported, f"--help imported {sorted(HEAVY & imported)}"
    assert seconds < HELP_BOUND_S, f"{' '.join(command)} --help took {seconds:.2f} s"


@pytest.mark.parametrize("command", list(prezoo.COMMANDS))
def test_every_prezoo_command_is_its_python_m_entry_point(command, capsys):
    package, sub, what = prezoo.COMMANDS[command]
    with pytest.raises(SystemExit) as done:
        prezoo.main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {package}{f' {sub}' if sub else ''} ")
    assert f"  {command} " in prezoo.command_table() and what


def test_prezoo_names_an_unknown_or_missing_command():
    for argv, message in (([], "required: COMMAND"), (["nope"], "invalid choice: 'nope'")):
        out = cli("prezoo", *argv)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("command", ["get", "profile"])
def test_zoo_get_and_profile_say_where_they_went(command):
    out = cli("zoo", command, "--max-params", "0.3M", "--out", "x")
    assert out.returncode == 2 and not out.stdout
    assert out.stderr == (f"python -m zoo {command} is now `prezoo {command}` (or `python -m export {command}`), "
                          f"with the same options\n")


# -- `import zoo`: cheap, and timm still finds prezoo_vit -----------------------------------------------------------

@pytest.fixture(scope="module")
def exported(zoo_dir, tmp_path_factory) -> Path:
    zoo = Zoo.load(zoo_dir)
    return ExportCache(tmp_path_factory.mktemp("exports")).get(zoo, zoo.entries[0], "safetensors")


IMPORT_ORDERS = {
    "timm after zoo": "import sys, zoo\nassert 'torch' not in sys.modules, 'import zoo loaded torch'\nimport timm",
    "timm before zoo": "import timm, zoo",
    "timm loaded by zoo.vit": "import zoo\nfrom zoo import ViT\nimport timm",
    "timm loaded by zoo.store": "from zoo.store import Zoo\nimport timm",
    "zoo.pretrained first": "from zoo import PreZooViT\nimport timm",
}


@pytest.mark.parametrize("imports", IMPORT_ORDERS.values(), ids=IMPORT_ORDERS)
def test_import_zoo_registers_prezoo_vit_in_timm_whoever_loads_timm(imports, exported):
    script = f"{imports}\nprint(type(timm.create_model({f'local-dir:{exported}'!r}, pretrained=True)).__name__)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "PreZooViT"


def test_the_names_of_zoo_load_on_first_use():
    import zoo

    assert set(zoo.__all__) <= set(dir(zoo))
    assert all(getattr(zoo, name).__name__ == name for name in zoo.__all__ if name != "BUILTIN_SPACES")
    assert zoo.BUILTIN_SPACES["mini"] == MINI
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = zoo.nope


# -- zoo, export get: get --id, FLOPs in MACs, unit hints, a missing --zoo ----------------------------------------

def test_export_get_by_id_and_every_zoo_command_prints_flops_in_macs(zoo_dir, tmp_path):
    zoo = Zoo.load(zoo_dir)
    entry = zoo.entries[1]
    got = cli("export", "get", "--zoo", zoo_dir, "--id", entry.id, "--out", tmp_path / "model")
    assert got.returncode == 0, got.stderr
    assert f"chose {entry.id}: {human(entry.params)} params, {human(entry.flops)} {FLOPS_LABEL}," in got.stdout
    assert json.loads((tmp_path / "model" / "config.json").read_text())["arch"] == entry.arch.to_dict()
    listed = cli("zoo", "list", "--zoo", zoo_dir).stdout.splitlines()
    assert FLOPS_LABEL in listed[1]
    assert all(f" {human(e.flops)} " in next(line for line in listed if line.startswith(e.id)) for e in zoo.entries)
    assert FLOPS_LABEL in cli("zoo", "spaces", "mini").stdout
    for args, message in ((["--id", entry.id, "--max-params", "1M"], "by --id or by a budget, not both"),
                          (["--id", "e1-d1-00000000"], "no entry 'e1-d1-00000000'"),
                          (["--max-params", "0.3"], "did you mean 0.3M?")):
        bad = cli("export", "get", "--zoo", zoo_dir, *args, "--out", tmp_path / "x")
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


@pytest.mark.parametrize("value", ["0.3", 0.3, "5", 999, " 12 "])
def test_a_budget_under_1000_without_a_unit_gets_a_hint(value):
    with pytest.raises(ValueError, match=rf"no unit .* did you mean {str(value).strip()}M\?"):
        parse_count(value, "max_params")


@pytest.mark.parametrize("value, count", [("300000", 3e5), (1000, 1e3), ("0.3M", 3e5), ("0.5K", 500)])
def test_bare_numbers_from_1000_and_any_number_with_a_unit_count_as_before(value, count):
    assert parse_count(value, "max_flops") == count


@pytest.mark.parametrize("source", ["zoos/no-such-zoo", "no-such-folder"])
def test_a_zoo_folder_that_does_not_exist_is_named_as_such(source):
    """'zoos/no-such-zoo' also reads as a Hub repo id (the test Hub, on loopback, has none): the answer says first
    that there is no such folder, not only that the Hub has no such repo."""
    for module in ("zoo", "server"):
        out = cli(module, *(["list"] if module == "zoo" else []), "--zoo", source, timeout=120)
        assert out.returncode == 2, out.stderr
        assert f"no zoo at {source}: " in out.stderr and "Traceback" not in out.stderr
        assert "no folder" in out.stderr if "/" in source else "not a directory" in out.stderr


# -- training: resume, search outputs, package's second evaluation, MACs --------------------------------------------

def training(*args: str | Path) -> subprocess.CompletedProcess:
    return cli("training", *args)


def test_train_into_an_existing_run_resumes_and_refuses_changed_settings_unless_asked(tmp_path, preferred):
    out = tmp_path / "run"
    steps = lambda epochs: int(epochs * (55000 // 32))  # _train_args: batch 32 on Fashion-MNIST's 55,000 train images
    assert training(*_train_args(out, preferred, "0.003")).returncode == 0
    neutral = training(*_train_args(out, preferred, "0.003", log_every=3, ckpt_every=2))  # no weight changes
    assert neutral.returncode == 0, neutral.stderr
    assert f"resuming {out} from step {steps(0.003)} of {steps(0.003)}\n" in neutral.stdout

    changed = training(*_train_args(out, preferred, "0.006", lr=0.002))
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "epochs 0.003 -> 0.006, lr 0.001 -> 0.002" in changed.stderr and "--allow-changed-settings" in changed.stderr
    assert json.loads((out / "config.json").read_text())["epochs"] == 0.003
    assert Checkpoint(out).header()["step"] == steps(0.003)

    allowed = training(*_train_args(out, preferred, "0.006", lr=0.002), "--allow-changed-settings")
    assert allowed.returncode == 0, allowed.stderr
    assert (f"resuming {out} from step {steps(0.003)} of {steps(0.006)} with changed settings: epochs 0.003 -> "
            f"0.006, lr 0.001 -> 0.002") in allowed.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["epochs"], config["lr"]) == (0.006, 0.002)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    events = [r for r in log if "event" in r]
    assert [(e["step"], e["event"], e["changed"]) for e in events] == [
        (steps(0.003), "settings changed", {"epochs": [0.003, 0.006], "lr": [0.001, 0.002]})]
    assert Checkpoint(out).header()["step"] == steps(0.006)

    other_run = training(*_train_args(out, preferred, "0.006", lr=0.002, seed=1), "--allow-changed-settings")
    assert other_run.returncode == 2 and "holds a run of another seed" in other_run.stderr


@pytest.mark.slow
def test_evaluate_search_and_package_print_macs_and_say_what_they_do(tmp_path):
    """Two preferred archs (two 50K buckets) and a 5-step run, so that evaluating twice stays short."""
    selected = training("select", "--space", "mini", "--low", "200K", "--high", "300K", "--width", "50K",
                        "--batch-size", "8", "--out", tmp_path / "select", "--no-plot")
    assert selected.returncode == 0, selected.stderr
    run = tmp_path / "run"
    assert training(*_train_args(run, str(tmp_path / "select" / "preferred.json"), "0.003")).returncode == 0
    evaluated = training("evaluate", "--run", run)
    assert evaluated.returncode == 0, evaluated.stderr
    rows = json.loads((run / "eval_test.json").read_text())["results"]
    lines = evaluated.stdout.splitlines()
    assert len(rows) == 2 and FLOPS_LABEL in lines[0]
    assert all(f" {human(r['flops'])} " in line for r, line in zip(rows, lines[1:], strict=False))

    searched = training("search", "--run", run, "--max-params", "0.3M", "--population", "4", "--generations", "1",
                        "--val-images", "500")
    assert searched.returncode == 0, searched.stderr
    doc = json.loads((run / "search" / "search.json").read_text())
    best, evaluated_archs = doc["best"], doc["evaluated"]
    assert doc["kind"] == "prezoo.search" and doc["settings"]["max_params"] == 3e5 and len(doc["history"]) == 1
    assert best == evaluated_archs[0] and [a["score"] for a in evaluated_archs] == sorted(
        (a["score"] for a in evaluated_archs), reverse=True)
    assert all(a["params"] <= 3e5 for a in evaluated_archs) and "first 500 of the 5000 images" in doc["fitness"]
    assert f"best under the budget: {best['id']}" in searched.stdout
    assert f"params {human(best['params'])}  {FLOPS_LABEL} {human(best['flops'])}" in searched.stdout
    with Image.open(run / "search" / "search.png") as plot:
        assert plot.format == "PNG" and plot.width > 500

    packaged = training("package", "--run", run, "--out", tmp_path / "zoo", "--name", "t")
    assert packaged.returncode == 0, packaged.stderr
    assert (f"evaluating the 2 entries again, with the weights rounded to fp16: {run / 'eval_test.json'} holds "
            f"their fp32 top-1") in packaged.stdout


def test_the_selection_table_prints_flops_in_macs():
    from training.report import selection_table
    from training.select import SelectConfig, select

    selection = select(SelectConfig(MINI, batch_size=8, progress=False))
    table = selection_table(selection).splitlines()
    assert FLOPS_LABEL in table[1]
    for c in selection.preferred_archs:
        assert f" {human(c.flops)} " in next(line for line in table if f" {c.arch.id} " in line)


# -- the REST API: samples, /docs examples --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def url(zoo_dir, tmp_path_factory):
    app = create_app(zoo_dir, tmp_path_factory.mktemp("cache"), ServerConfig(admin_token=ADMIN, hub_token=HUB_TOKEN))
    with serve(app) as url:
        yield url


def test_samples_are_listed_and_served_by_name_only(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        samples = client.get("/api/samples").json()["samples"]
        assert len(samples) == 10 and "9-ankle-boot.png" in [s["name"] for s in samples]
        for sample in samples:
            r = client.get(sample["url"])
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(r.content)) as image:
            assert image.size == (28, 28)
        for name in ("nope.png", "..%2F..%2Fzoo.json", "%2Fetc%2Fpasswd"):
            r = client.get(f"/api/samples/{name}")
            assert r.status_code == 404 and "error" in r.json(), (name, r.text)
        hint = client.post("/api/specialize", json={"max_params": 0.3})
        assert hint.status_code == 422 and "did you mean 0.3M?" in hint.json()["error"]


def test_every_example_body_in_the_docs_is_accepted(url):
    """/docs (Swagger UI) fills a request body with its schema's first example, or makes one up from the fields when
    there is none (`max_flops: 0`, a 422): every JSON body has examples, and each is answered 200."""
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        openapi = client.get("/openapi.json").json()
        bodies = {(method, path): resolve(openapi, op["requestBody"]["content"]["application/json"]["schema"])
                  for path, methods in openapi["paths"].items() for method, op in methods.items()
                  if "application/json" in op.get("requestBody", {}).get("content", {})}
        assert set(bodies) == {("post", "/api/specialize"), ("post", "/api/push")}
        for (method, path), schema in bodies.items():
            assert schema.get("examples"), f"{path} has no example body: /docs would make one up"
            for example in schema["examples"]:
                r = client.request(method, path, json=example)
                assert r.status_code == 200, (path, example, r.text)


def resolve(openapi: dict, schema: dict) -> dict:
    """A schema with its $ref ('#/components/schemas/Name') followed."""
    ref = schema.get("$ref")
    return schema if ref is None else openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]]


# -- the README's REST block, run as written -------------------------------------------------------------------------

def readme_rest_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"The REST API \(OpenAPI at `/docs`\).*?```bash\n(.*?)```", text, re.S)
    assert block, "the README's REST block (```bash after 'The REST API (OpenAPI at `/docs`)') is missing"
    return [line for line in block.group(1).splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_readme_rest_examples_run_as_written_against_python_m_server(tmp_path):
    port, client_dir = free_port(), tmp_path / "client"
    client_dir.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # python3
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--cache", tmp_path / "cache"],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", server, tmp_path / "server.log")
        lines = readme_rest_block()
        script = "".join(f"{line.replace('localhost:7860', f'127.0.0.1:{port}')}\necho '@@' $?\n" for line in lines)
        ran = subprocess.run(["bash", "-c", script], cwd=client_dir, capture_output=True, text=True, timeout=300,
                             env=env)
    finally:
        server.terminate()
        server.wait(timeout=60)
    parts = re.split(r"@@ (\d+)\n", ran.stdout)
    answers, codes = parts[0:-1:2], parts[1::2]
    assert len(codes) == len(lines), (ran.stdout, ran.stderr)
    for line, answer, code in zip(lines, answers, codes, strict=True):
        assert code == "0", (line, answer, ran.stderr)
        if answer.strip():
            assert "error" not in json.loads(answer), (line, answer)
    entry_id = json.loads(answers[2])["entry"]["id"]
    prediction = json.loads(answers[-1])
    assert prediction["model"] == entry_id and len(prediction["predictions"][0]["top"]) == 3
    assert (client_dir / f"prezoo-{entry_id}.onnx").stat().st_size > 100_000
    with Image.open(client_dir / "ankle-boot.png") as image:
        assert image.size == (28, 28)


def wait_until_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"python -m server did not answer within 180 s:\n{log.read_text()[-3000:]}")
