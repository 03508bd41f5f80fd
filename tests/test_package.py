"""PreZoo as a package: the declared dependencies match the pins, the license and metadata are declared, a built wheel
works outside the checkout, its `prezoo` command too, from a folder whose own `export.py`, `server.py` and `zoo.py`
would shadow `python -m`, and the README's install-from-wheel commands run as written in a fresh environment that
gets its dependencies from the package index."""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from importlib.metadata import Distribution, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import zoo
from bench.bench_server import stop
from tests.test_project import ROOT, pins

# Which extras each requirements file pins ("" is the core): `pip install .[cpu,serve,train]` is requirements.txt.
PINNED_AS = {"requirements.txt": ("", "cpu", "serve", "train", "triton"), "requirements-gpu.txt": ("gpu",),
             "requirements-dev.txt": ("dev", "ray")}
PACKAGES = ("zoo", "training", "export", "server", "prezoo")
SHIPPED_ZOOS = ("hytra-fmnist", "ladder-fmnist", "mbconv-fmnist")
SHADOWS = ("export", "server", "zoo")  # a user's own modules of these names, in the folder `prezoo` runs from
WHEEL_SECTION = "Use a PreZoo model without PreZoo's repo"
# Installed first and shared with the README's fresh environment, as setup.sh installs them first: torch's CUDA
# build is 6 GB; every other dependency the README's own `pip install` takes from the package index.
SHARED = ("torch", "torchvision")


def declared() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(r) for r in reqs] for group, reqs in groups.items()}


@pytest.mark.parametrize("requirements", list(PINNED_AS))
def test_every_pin_satisfies_the_declared_specifiers(requirements):
    groups = declared()
    pinned = {canonicalize_name(r.name): Version(next(iter(r.specifier)).version)
              for r in map(Requirement, pins(requirements))}
    reqs = [r for g in PINNED_AS[requirements] for r in groups[g]]
    assert {canonicalize_name(r.name) for r in reqs} == set(pinned), f"{requirements} and pyproject.toml differ"
    for r in reqs:
        pin = pinned[canonicalize_name(r.name)]
        assert pin in r.specifier, f"{requirements} pins {r.name}=={pin}, outside pyproject.toml's {r}"
        lower = [s for s in r.specifier if s.operator == ">="]
        assert len(lower) == 1 and Version(lower[0].version) == pin, f"{r}: the lower bound is the tested pin"
        assert any(s.operator == "<" for s in r.specifier), f"{r} has no upper bound"


def test_extras_cover_every_group_and_onnxruntime_comes_from_one_extra_only():
    groups = declared()
    assert set(groups) == {g for gs in PINNED_AS.values() for g in gs}
    ort = {"onnxruntime", "onnxruntime-gpu"}
    holders = {g: {canonicalize_name(r.name) for r in reqs} & ort for g, reqs in groups.items()}
    assert holders == {"": set(), "cpu": {"onnxruntime"}, "gpu": {"onnxruntime-gpu"}, "serve": set(),
                       "train": set(), "dev": set(), "ray": set(), "triton": set()}


def test_the_triton_extra_is_what_the_config_writer_imports_and_no_test_tool():
    """`prezoo triton` needs tritonclient's gRPC half (grpcio, protobuf), not the dev extra's browsers and linters."""
    assert {canonicalize_name(r.name) for r in declared()["triton"]} == {"tritonclient", "grpcio", "protobuf"}


def test_the_license_authors_and_version_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta = project["project"]
    assert (meta["license"], meta["license-files"], meta["authors"]) == ("Apache-2.0", ["LICENSE"],
                                                                         [{"name": "PreZoo developers"}])
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert meta["urls"] and all(url.startswith("https://") for url in meta["urls"].values())
    assert meta["dynamic"] == ["version"] and project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "zoo.__version__"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the checkout, with local state planted in it (the checkout itself stays clean)."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "out", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    for planted in ("runs/r1/checkpoint.pt", "out/model.onnx", ".venv/bin/python"):
        (src / planted).parent.mkdir(parents=True, exist_ok=True)
        (src / planted).write_bytes(b"local state")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("prezoo-*.whl")
    return wheel


def fresh_venv(folder: Path) -> Path:
    """A new virtualenv that finds the dependencies (torch is 6 GB) in this environment's site-packages via a
    .pth file, placed after its own: what the wheel installs there comes first."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    shared = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(own) / "prezoo-test-shared.pth").write_text("\n".join(sorted(shared)) + "\n")
    return python


# Run by the fresh venv's python from a folder outside the checkout.
CHECK_INSTALLED = """
import json, sys
import export, server, training, zoo
import timm, torch
from zoo import PreZooViT, Zoo
from zoo.store import DEFAULT_ZOO

repo, entry_id = sys.argv[1:]
default = Zoo.load(DEFAULT_ZOO)
x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    ref = default.subnet(entry_id).eval()(x)
    via_timm = timm.create_model("hf-hub:" + repo, pretrained=True).eval()(x)
    via_class = PreZooViT.from_pretrained(repo).eval()(x)
print(json.dumps({"modules": [m.__file__ for m in (zoo, export, server, training)], "default_zoo": str(DEFAULT_ZOO),
                  "checksum": default.checksum, "timm_equal": torch.equal(via_timm, ref),
                  "from_pretrained_equal": torch.equal(via_class, ref)}))
"""


def readme_block(section: str, language: str) -> str:
    """The first ```language block of a README section (the section's text is what users copy)."""
    text = (ROOT / "README.md").read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_health(serve: list[str | Path], cwd: Path, env: dict[str, str], port: int) -> dict:
    """`serve` (a `prezoo serve` command line, in its own process group), started from `cwd` to listen on `port`:
    its /api/health once it answers; then the group is stopped."""
    log = (cwd / "server.log").open("w")
    proc = subprocess.Popen(serve, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, (cwd / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the installed server did not answer"
            try:
                with no_proxy.open(f"http://127.0.0.1:{port}/api/health", timeout=5) as answer:
                    return json.loads(answer.read())
            except OSError:
                time.sleep(0.5)
    finally:
        stop(proc)  # SIGTERM, then SIGKILL: the server, or the shell that runs it; then what that shell started
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        log.close()


def closure(names: tuple[str, ...]) -> list[Distribution]:
    """The installed distributions `names` need, with the extras each requirement asks for (torch's CUDA libraries
    come from cuda-toolkit's), `names` included."""
    found: dict[str, Distribution] = {}
    todo, seen = [Requirement(n) for n in names], set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        for extra in ("", *sorted(req.extras)):
            if (name, extra) not in seen:
                seen.add((name, extra))
                dist = found.setdefault(name, distribution(name))
                todo += [r for r in map(Requirement, dist.requires or [])
                         if r.marker is None or r.marker.evaluate({"extra": extra})]
    return list(found.values())


def venv_sharing(folder: Path, names: tuple[str, ...]) -> Path:
    """A new virtualenv with pip, seeing only `names` (and what they need) as already installed: their files, linked
    into a folder a .pth of its site-packages names; what its pip installs comes first. Its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=300)
    python = folder / "bin" / "python"
    shared = folder.parent / f"{folder.name}-shared"
    shared.mkdir()
    for dist in closure(names):
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            if not (shared / top).exists():
                (shared / top).symlink_to(dist.locate_file(top))
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(own) / "prezoo-test-shared.pth").write_text(f"{shared}\n")
    return python


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_works_outside_the_checkout(wheel, tmp_path, local_hub, monkeypatch):
    from export.cache import ExportCache
    from export.hub import push_folder
    from zoo import Zoo
    from zoo.catalog import Catalog
    from zoo.store import CHECKOUT_ZOOS, DEFAULT_ZOO

    names = zipfile.ZipFile(wheel).namelist()
    info, data = f"prezoo-{zoo.__version__}.dist-info/", f"prezoo-{zoo.__version__}.data/data/share/prezoo/zoos/"
    allowed = tuple(f"{p}/" for p in PACKAGES) + (info, *(f"{data}{name}/" for name in SHIPPED_ZOOS))
    assert [n for n in names if not n.startswith(allowed)] == []
    assert not [n for n in names if any(part in n.split("/") for part in ("tests", "bench", "runs", "out", ".venv"))]
    for name in SHIPPED_ZOOS:
        assert {n.rsplit("/", 1)[1] for n in names if n.startswith(f"{data}{name}/")} == {
            p.name for p in (CHECKOUT_ZOOS / name).iterdir()}
    scripts = zipfile.ZipFile(wheel).read(f"{info}entry_points.txt").decode()
    assert "[console_scripts]\nprezoo = prezoo.__main__:main" in scripts
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{info}METADATA"))
    assert (metadata["License-Expression"], metadata["License-File"], metadata["Author"]) == (
        "Apache-2.0", "LICENSE", "PreZoo developers")
    assert metadata["Version"] == zoo.__version__ and metadata.get_all("Project-URL")
    assert zipfile.ZipFile(wheel).read(f"{info}licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()

    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], check=True,
                   capture_output=True, timeout=300)

    monkeypatch.setenv("HF_TOKEN", "test-admin-token")
    shipped = Zoo.load(DEFAULT_ZOO)
    entry = shipped.entries[len(shipped.entries) // 2]
    push_folder(ExportCache(tmp_path / "exports").get(shipped, entry, "safetensors"), "prezoo/packaged-model")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([python, "-c", CHECK_INSTALLED, "prezoo/packaged-model", entry.id], cwd=outside, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    venv_root = venv.resolve()
    assert all(Path(f).resolve().is_relative_to(venv_root) for f in found["modules"]), found["modules"]
    assert Path(found["default_zoo"]).resolve() == venv_root / "share" / "prezoo" / "zoos" / "ladder-fmnist"
    assert found["checksum"] == shipped.checksum
    assert found["timm_equal"] and found["from_pretrained_equal"]
    snippet = readme_block(WHEEL_SECTION, "python")  # the README's own words, run
    readme = subprocess.run([python, "-c", snippet.replace("org/name", "prezoo/packaged-model")], cwd=outside,
                            env=env, capture_output=True, text=True, timeout=300)
    assert "org/name" in snippet and readme.returncode == 0, readme.stderr[-3000:]

    prezoo = venv / "bin" / "prezoo"
    shadowed = tmp_path / "shadowed"
    shadowed.mkdir()
    for name in SHADOWS:
        (shadowed / f"{name}.py").write_text(f"raise SystemExit('the working folder\\'s {name}.py was imported')\n")
    helped = subprocess.run([prezoo, "--help"], cwd=shadowed, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: prezoo"), helped.stderr[-2000:]
    got = subprocess.run([prezoo, "get", "--max-params", "0.3M", "--format", "onnx", "--out", "model"], cwd=shadowed,
                         env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0 and (shadowed / "model" / "model.onnx").stat().st_size > 10_000, got.stderr[-2000:]
    port = free_port()
    health = served_health([prezoo, "serve", "--port", str(port), "--cache", str(shadowed / "cache")], shadowed, env,
                           port)
    every = Catalog([Zoo.load(CHECKOUT_ZOOS / name) for name in SHIPPED_ZOOS])  # the wheel's copies, served by default
    assert (health["ready"], health["zoos"], health["checksum"]) == (True, list(SHIPPED_ZOOS), every.checksum)


@pytest.mark.slow
def test_the_readme_wheel_section_runs_as_written_with_only_the_wheel(wheel, tmp_path):
    """The README's install-from-wheel lines, each run as written by bash in a folder holding only the wheel, in a
    fresh virtualenv whose `pip install` takes every dependency but torch and torchvision (`SHARED`) from the package
    index (pip's cache makes a second run fast): the extras bring what the commands need, the shipped zoos are found
    by name, and `prezoo serve` answers; without ONNX Runtime it stops at start with one line naming the extras."""
    lines = [line for line in readme_block(WHEEL_SECTION, "bash").splitlines() if line.strip()]
    assert lines[0].startswith(f'pip install "{wheel.name}[')  # the wheel this version builds, by its name
    python = venv_sharing(tmp_path / "env", SHARED)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(wheel, work)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PREZOO_HOST")}
    env.update(PATH=f"{python.parent}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(python.parent.parent),
               PREZOO_PORT=str(port), PREZOO_CACHE=str(tmp_path / "prezoo-cache"))  # `. env/bin/activate`
    out, health = "", None
    for line in lines:
        if line.startswith("prezoo serve"):
            health = served_health(["bash", "-c", line], work, env, port)
            continue
        done = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        out += done.stdout

    share = (python.parent.parent / "share" / "prezoo" / "zoos").absolute()
    for name in SHIPPED_ZOOS:  # `prezoo list` and `--zoo NAME`: the wheel's copies
        assert re.search(rf"^zoo {name} .*\({re.escape(str(share / name))}\)$", out, re.MULTILINE), out[-3000:]
    assert {p.name for p in (work / "model").iterdir()} >= {"config.json", "model.safetensors", "README.md",
                                                            "model.int8.onnx"}
    assert list((work / "triton-models").glob("*/config.pbtxt")) and list((work / "triton-models").glob("*/1/*.onnx"))
    assert health is not None and (health["ready"], health["zoos"]) == (True, list(SHIPPED_ZOOS))
    absent = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('playwright', "
                             "'schemathesis', 'pytest', 'ray') if u.find_spec(m)])"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert absent.stdout.strip() == "[]"  # the triton and serve extras bring no test tools

    subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "onnxruntime"], env=env, check=True,
                   capture_output=True, timeout=300)
    bare = subprocess.run(["prezoo", "serve"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and bare.stderr.count("\n") == 1, bare.stderr[-2000:]
    assert "ONNX Runtime is not installed" in bare.stderr and "prezoo[serve,cpu]" in bare.stderr
