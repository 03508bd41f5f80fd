"""Project-level promises: the README's test command is what CI runs; packages run as modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in _readme_commands() if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, f"{test_cmd!r} is not a line of .ci/run"


def test_readme_start_command_installs_then_starts():
    start = _readme_commands()[0]
    assert start.startswith("bash setup.sh && .venv/bin/python -m ")


def test_torch_pins_come_first():
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins[:2] == ["torch==2.14.1", "torchvision==0.29.1"]
    assert all("==" in p for p in pins), "every dependency is pinned"
    names = {p.split("==")[0].lower() for p in pins}
    assert not {"onnxruntime", "onnxruntime-gpu"} <= names, "never both onnxruntime packages"


def test_every_package_runs_as_a_module():
    for pkg in ("zoo", "training", "export", "server"):
        out = subprocess.run([sys.executable, "-m", pkg, "--help"], capture_output=True, text=True, cwd=ROOT,
                             timeout=120)
        assert out.returncode == 0 and "usage" in out.stdout.lower(), (pkg, out.stderr[-500:])
