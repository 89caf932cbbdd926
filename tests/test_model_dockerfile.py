"""The model-server Dockerfile cannot be built here: check it, its files and its entrypoint.

- every COPY source exists, and together they hold the whole import closure of
  ``models.serving.server`` (so the image can start);
- the closure's third-party imports are all in the image's requirements file;
- the ``serve`` script (SageMaker's entrypoint) really starts the server from
  SM_MODEL_DIR on SAGEMAKER_BIND_TO_PORT and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import ast
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from models.serving.bundle import write_bundle

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "model-server.Dockerfile"
REQS = ROOT / "docker" / "model-server-requirements.txt"
OURS = ("dsp", "cloud", "models", "simulator", "edge", "pumpwatch")
DIST_OF = {"numpy": "numpy", "scipy": "scipy", "msgspec": "msgspec", "zstandard": "zstandard",
           "aiohttp": "aiohttp", "prometheus_client": "prometheus-client"}


def instructions() -> list[tuple[str, str]]:
    lines: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    out = []
    for line in lines:
        instr, _, rest = line.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def import_closure(root_module: str) -> tuple[set[Path], set[str]]:
    """Our files reachable from ``root_module`` (with packages' __init__), and 3rd-party tops."""
    files: set[Path] = set()
    third: set[str] = set()
    todo = [root_module]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        for i in range(1, len(parts)):
            todo.append(".".join(parts[:i]))  # parent packages run their __init__
        path = _module_path(mod)
        if path is None:
            continue
        files.add(path)
        pkg = mod if path.name == "__init__.py" else ".".join(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = pkg.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                top = n.split(".")[0]
                if top in OURS:
                    if _module_path(n) is not None:
                        todo.append(n)
                elif top and top != "__future__" and top not in sys.stdlib_module_names:
                    third.add(top)
    return files, third


def test_dockerfile_shape() -> None:
    ins = instructions()
    assert ins[0][0] == "FROM" and ins[0][1].startswith("python:3.11")
    assert ("EXPOSE", "8080") in ins
    assert ins[-1] == ("CMD", '["serve"]')
    copies = [shlex.split(a) for i, a in ins if i == "COPY"]
    assert ["docker/serve", "/usr/local/bin/serve"] in copies


def test_copied_files_exist_and_cover_the_server_import_closure() -> None:
    copies = [shlex.split(a) for i, a in instructions() if i == "COPY"]
    sources = [ROOT / c[0] for c in copies]
    for s in sources:
        assert s.exists(), f"Dockerfile copies {s.relative_to(ROOT)}, which does not exist"
    files, _ = import_closure("models.serving.server")
    assert files
    missing = [
        f.relative_to(ROOT) for f in files
        if not any(f == s or (s.is_dir() and f.is_relative_to(s)) for s in sources)
    ]
    assert not missing, f"server imports files the image lacks: {missing}"


def test_requirements_cover_third_party_imports() -> None:
    _, third = import_closure("models.serving.server")
    reqs = {
        line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for line in REQS.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    need = {DIST_OF.get(t, t) for t in third}
    assert need <= reqs, f"missing from {REQS.name}: {sorted(need - reqs)}"
    assert "boto3" not in reqs and "botocore" not in need  # inference stays light


def test_serve_entrypoint_starts_server_from_sm_model_dir(tmp_path: Path) -> None:
    model_dir = write_bundle(tmp_path / "model", model_version="container-1")
    env = {
        **os.environ,
        "SM_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": "0",
        "PUMPWATCH_MODEL_VERSION": "pumps/9",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    proc = subprocess.Popen(
        ["sh", str(ROOT / "docker" / "serve"), "--host", "127.0.0.1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        url = line.strip().rsplit(" ", 1)[1]
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2) as r:  # noqa: S310
                    body = r.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("serve never became healthy")
                time.sleep(0.05)
        assert "pumps/9" in body  # the version deploy sets, not the manifest's
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        if proc.stdout is not None:
            proc.stdout.close()
