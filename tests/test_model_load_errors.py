"""A bundle that fails to load is an error naming the path and the reason, never a fallback.

Real server processes (``python -m models.serving.server`` and ``pumpwatch endpoint``):
a misconfigured model exits 2 with one line on stderr; only when no model is
configured at all is the built-in bundle served, and the log says so at WARNING.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from models.serving.bundle import BUILTIN_VERSION, pack_bundle, write_bundle
from tests.infra.model_server import ModelServerProcess


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("m")
    return pack_bundle(write_bundle(root / "b", model_version="t-1"), root / "d" / "model.tar.gz")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_model_dir_that_is_a_file_exits_2_naming_it(tarball: Path) -> None:
    done = ModelServerProcess(model_dir=tarball).run_to_exit()
    assert done.returncode == 2
    lines = _error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert str(tarball) in lines[0] and "is a file, not a directory" in lines[0]
    assert "listening" not in done.stdout  # refused before it listens


def test_pumpwatch_endpoint_refuses_the_same(tarball: Path) -> None:
    srv = ModelServerProcess(model_dir=tarball)
    srv.cmd = [sys.executable, "-m", "pumpwatch", "endpoint", "--port", "0", "--host",
               "127.0.0.1", "--model-dir", str(tarball)]
    done = srv.run_to_exit()
    assert done.returncode == 2
    assert len(_error_lines(done.stderr)) == 1, done.stderr
    assert str(tarball) in done.stderr


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_missing_or_empty_model_dir_exits_2(tmp_path: Path, case: str) -> None:
    md = tmp_path / "models"
    if case == "empty":
        md.mkdir()
    done = ModelServerProcess(model_dir=md).run_to_exit()
    assert done.returncode == 2
    assert len(_error_lines(done.stderr)) == 1, done.stderr
    assert str(md) in done.stderr
    assert ("no such directory" if case == "missing" else "empty directory") in done.stderr


def test_corrupt_bundle_exits_2_naming_file_and_reason(tmp_path: Path) -> None:
    md = write_bundle(tmp_path / "model", model_version="c-1")
    manifest = json.loads((md / "bundle.json").read_text())
    manifest["classifier"] = {"kind": "no-such-kind"}
    (md / "bundle.json").write_text(json.dumps(manifest))
    done = ModelServerProcess(model_dir=md).run_to_exit()
    assert done.returncode == 2
    errors = [line for line in _error_lines(done.stderr) if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert str(md) in errors[0] and "unknown classifier kind 'no-such-kind'" in errors[0]


def test_unreadable_registry_exits_2(tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    reg.mkdir()
    (reg / "index.json").write_text("{not json")
    done = ModelServerProcess(registry=reg).run_to_exit()
    assert done.returncode == 2
    assert len(_error_lines(done.stderr)) == 1, done.stderr
    assert str(reg / "index.json") in done.stderr


def test_builtin_only_without_a_model_and_it_says_so_at_warning(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ModelServerProcess(log_path=log) as srv, \
            urllib.request.urlopen(srv.url + "/ping", timeout=5) as r:  # noqa: S310
        assert json.loads(r.read())["model_version"] == BUILTIN_VERSION
    warnings = [line for line in log.read_text().splitlines() if " WARNING " in line]
    assert any("no model configured" in line and "built-in" in line for line in warnings), \
        log.read_text()
