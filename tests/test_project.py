"""Project-level promises: the README's test command is what CI runs; packages run as modules; the `prezoo` commands
the README names exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The README's ```bash blocks: the start command, then the test command."""
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in readme_commands() if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, f"{test_cmd!r} is not a line of .ci/run"


def test_readme_start_command_installs_then_starts():
    start = readme_commands()[0]
    assert start == "bash setup.sh && .venv/bin/prezoo serve"


def test_every_prezoo_command_the_readme_names_exists():
    from prezoo.__main__ import COMMANDS

    named = set(re.findall(r"\bprezoo ([a-z][a-z-]*)", (ROOT / "README.md").read_text()))
    assert {"serve", "get", "profile", "train"} <= named and named <= set(COMMANDS), named - set(COMMANDS)


def pins(name: str) -> list[str]:
    return [line for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")]


def test_torch_pins_come_first_and_every_dependency_is_pinned_once():
    assert pins("requirements.txt")[:2] == ["torch==2.14.1", "torchvision==0.29.1"]
    every = [p for f in ("requirements.txt", "requirements-dev.txt", "requirements-gpu.txt") for p in pins(f)]
    pinned = r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?==[0-9][^ ]*"  # name, its extras if any, exact version
    assert all(re.fullmatch(pinned, p) for p in every), "every dependency is pinned"
    names = [p.split("==")[0].split("[")[0].lower() for p in every]
    assert len(names) == len(set(names)), "each package is pinned in one file only"
    assert "onnxruntime-gpu" not in {p.split("==")[0] for p in pins("requirements.txt")}, "never both onnxruntime"


def test_every_package_runs_as_a_module():
    for pkg in ("zoo", "training", "export", "server", "prezoo"):
        out = subprocess.run([sys.executable, "-m", pkg, "--help"], capture_output=True, text=True, cwd=ROOT,
                             timeout=120)
        assert out.returncode == 0 and "usage" in out.stdout.lower(), (pkg, out.stderr[-500:])


@pytest.mark.slow
def test_every_zoo_module_imports_first_in_a_fresh_interpreter():
    """An import cycle (a family -> timm -> the families' registration in timm -> that family) only shows when the
    module that closes it is imported first, as `python -m server --zoo DIR` did: each module, the families' too, gets
    an interpreter of its own."""
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "zoo").rglob("*.py") if p.stem != "__main__")
    runs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            for m in modules}
    failed = {m: p.communicate(timeout=120)[1][-300:] for m, p in runs.items() if p.wait(timeout=120) != 0}
    assert not failed, failed


def test_setup_names_an_unknown_option_and_installs_nothing():
    out = subprocess.run(["bash", "setup.sh", "--cuda"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2 and "unknown option '--cuda'" in out.stderr and not out.stdout


def test_setup_checks_disk_space_before_installing_anything(tmp_path):
    """A machine short of disk gets a clear error up front, not ENOSPC halfway through a 6 GB install."""
    shutil.copy(ROOT / "setup.sh", tmp_path)
    out = subprocess.run(["bash", "setup.sh"], capture_output=True, text=True, cwd=tmp_path, timeout=30,
                         env={**os.environ, "PREZOO_SETUP_NEED_GIB": "1000000"})
    assert out.returncode == 1 and "needs about 1000000 GiB of disk" in out.stderr and "GiB free" in out.stderr
    assert not out.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["setup.sh"]


def test_setup_names_a_malformed_disk_need_and_installs_nothing(tmp_path):
    shutil.copy(ROOT / "setup.sh", tmp_path)
    out = subprocess.run(["bash", "setup.sh"], capture_output=True, text=True, cwd=tmp_path, timeout=30,
                         env={**os.environ, "PREZOO_SETUP_NEED_GIB": "7.5"})
    assert out.returncode == 2 and "must be a whole number of GiB, not '7.5'" in out.stderr and not out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setup.sh"]
