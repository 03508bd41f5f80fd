"""PreZoo as a package: the declared dependencies match the pins, and a built wheel works outside the checkout, its
`prezoo` command too, from a folder whose own `export.py`, `server.py` and `zoo.py` would shadow `python -m`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bench.bench_server import stop
from tests.test_project import ROOT, pins

# Which extras each requirements file pins ("" is the core): `pip install .[cpu,serve,train]` is requirements.txt.
PINNED_AS = {"requirements.txt": ("", "cpu", "serve", "train"), "requirements-gpu.txt": ("gpu",),
             "requirements-dev.txt": ("dev", "ray")}
PACKAGES = ("zoo", "training", "export", "server", "prezoo")
SHADOWS = ("export", "server", "zoo")  # a user's own modules of these names, in the folder `prezoo` runs from


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
                       "train": set(), "dev": set(), "ray": set()}


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


def served_health(serve: list[str | Path], cwd: Path, env: dict[str, str]) -> dict:
    """`serve` (`prezoo serve`) with no --zoo, started from `cwd`: its /api/health once it answers."""
    port = free_port()
    log = (cwd / "server.log").open("w")
    proc = subprocess.Popen([*serve, "--port", str(port), "--cache", str(cwd / "cache")], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
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
        stop(proc)
        log.close()


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_works_outside_the_checkout(tmp_path, local_hub, monkeypatch):
    from export.cache import ExportCache
    from export.hub import push_folder
    from zoo import Zoo
    from zoo.store import DEFAULT_ZOO

    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    allowed = tuple(f"{p}/" for p in PACKAGES) + (f"prezoo-{version}.dist-info/",
                                                  f"prezoo-{version}.data/data/share/prezoo/zoos/ladder-fmnist/")
    assert [n for n in names if not n.startswith(allowed)] == []
    assert not [n for n in names if any(part in n.split("/") for part in ("tests", "bench", "runs", "out", ".venv"))]
    assert {n.rsplit("/", 1)[1] for n in names if "/zoos/ladder-fmnist/" in n} == {
        p.name for p in DEFAULT_ZOO.iterdir()}
    scripts = zipfile.ZipFile(wheel).read(f"prezoo-{version}.dist-info/entry_points.txt").decode()
    assert "[console_scripts]\nprezoo = prezoo.__main__:main" in scripts

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
    snippet = readme_block("Use a PreZoo model without PreZoo's repo", "python")  # the README's own words, run
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
    health = served_health([prezoo, "serve"], shadowed, env)
    assert (health["ready"], health["zoo"], health["checksum"]) == (True, shipped.name, shipped.checksum)
