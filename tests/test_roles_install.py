"""Each role installs alone: a gateway's ``pip install 'pumpwatch[edge]'`` runs the edge.

One venv per test session gets only the edge extra, installed from a copy of
this checkout (the packages pyproject.toml lists, so what is tested is what a
wheel carries). In it the gateway's commands work -- ``pumpwatch edge`` as
the README's systemd unit runs it, against a real broker -- and the other
roles' commands exit 2 with one line naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import pumpwatch.commands
from pumpwatch.cli import main as cli
from pumpwatch.commands._roles import PROVIDED_BY, missing_dependency
from tests.infra.require import need

from .edge._helpers import Collector, edge_config, write_toml
from .infra.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMMANDS = sorted(
    m.name for m in pkgutil.iter_modules(pumpwatch.commands.__path__) if not m.name.startswith("_")
)


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _extra(extra: str) -> set[str]:
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    reqs = PYPROJECT["project"]["optional-dependencies"][extra]
    return {_name(r) for r in reqs if not r.startswith("pumpwatch")} - core


def test_the_extras_table_matches_pyproject() -> None:
    """PROVIDED_BY names, for each role dependency, exactly the extras that install it."""
    dist_of = {m: _name(d[0]) for m, d in importlib.metadata.packages_distributions().items()}
    roles = ("edge", "cloud", "models")
    for module, extras in PROVIDED_BY.items():
        for extra in roles:
            direct = _extra(extra)
            pulled = {_name(r) for d in direct for r in importlib.metadata.requires(d) or ()}
            assert (dist_of[module] in direct | pulled) == (extra in extras), (module, extra)
    for extra in roles:  # and every library an extra adds is in the table
        for dist in _extra(extra):
            modules = {m for m, d in dist_of.items() if d == dist}
            assert any(extra in PROVIDED_BY.get(m, ()) for m in modules), (extra, dist)


def test_only_a_missing_role_dependency_becomes_the_one_line() -> None:
    """Our own missing module, an installed library's missing part: tracebacks, not advice."""
    for name in ("models.no_such_module", "sklearn.no_such_module", "no_such_library"):
        with pytest.raises(ModuleNotFoundError) as exc:
            importlib.import_module(name)
        assert missing_dependency(exc.value) is None, name
    assert missing_dependency(ModuleNotFoundError(name="aiobotocore")) is None  # installed here


def _text(output: str | bytes | None) -> str:
    """A subprocess's captured output as text: a timeout's is bytes even with text=True."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _copy_checkout(dest: Path) -> Path:
    """pyproject.toml, README.md and the packages it installs (no caches, no venvs)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for top in sorted({p.rstrip("*").rstrip(".") for p in patterns}):
        shutil.copytree(
            ROOT / top, dest / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return dest


@pytest.fixture(scope="session")
def edge_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a venv with ``pumpwatch[edge]`` only (built once per session)."""
    base = tmp_path_factory.mktemp("edge-only")
    src = _copy_checkout(base / "src")
    venv = base / "venv"
    # This interpreter's pip installs into the new venv (--python): no pip bootstrap there.
    steps = (
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", f"{src}[edge]"],
    )
    for step in steps:
        try:
            subprocess.run(step, check=True, capture_output=True, text=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out = f"{_text(exc.stdout)}{_text(exc.stderr)}"[-3000:]
            msg = f"cannot build the edge-only venv ({' '.join(step)}): {exc}\n{out}"
            need("an edge-only venv", msg)
    return venv / "bin"


def _run(
    bin_dir: Path, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``bin_dir/pumpwatch ARGS`` as a gateway runs it: no PYTHONPATH into this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(bin_dir / "pumpwatch"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def test_the_venv_has_the_edge_role_and_no_other(edge_bin: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    found = json.loads(subprocess.run(
        [str(edge_bin / "python"), "-c", probe, *PROVIDED_BY], cwd=tmp_path, check=True,
        capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")},
    ).stdout)
    edge = {m for m, extras in PROVIDED_BY.items() if "edge" in extras}
    assert {m for m, ok in found.items() if ok} == edge, found
    assert not found["aiobotocore"]


def test_help_lists_every_command(edge_bin: Path, tmp_path: Path) -> None:
    got = _run(edge_bin, "--help", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    listed = set(re.findall(r"^ {4}(\w+)\s", got.stdout, flags=re.MULTILINE))
    assert listed == set(COMMANDS), got.stdout


@pytest.mark.parametrize("command", ["edge", "replay", "simulate", "analyze"])
def test_gateway_commands_have_their_help(edge_bin: Path, tmp_path: Path, command: str) -> None:
    got = _run(edge_bin, command, "--help", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(f"usage: pumpwatch {command} ")
    assert "Traceback" not in got.stderr


def test_selftest_runs(edge_bin: Path, tmp_path: Path) -> None:
    got = _run(edge_bin, "selftest", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert "velocity RMS" in got.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [(["cloud", "--help"], "cloud"), (["endpoint", "--help"], "models"), (["up"], "all")],
)
def test_another_role_is_one_line_naming_its_extra(
    edge_bin: Path, tmp_path: Path, argv: list[str], extra: str
) -> None:
    got = _run(edge_bin, *argv, cwd=tmp_path)
    assert got.returncode == 2
    assert got.stdout == ""
    (line,) = got.stderr.splitlines()
    assert line.startswith(
        f"pumpwatch {argv[0]} needs the '{extra}' extra: pip install 'pumpwatch[{extra}]'"
    ), line


def test_local_model_registry_needs_no_boto3(edge_bin: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert cli(["models", "bundle", "--out", str(bundle), "--model-version", "v1"]) == 0
    reg = ["models", "--registry", str(tmp_path / "registry"), "--json"]
    got = _run(edge_bin, *reg, "register", "pumps", str(bundle), cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    got = _run(edge_bin, *reg, "list", "pumps", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert [p["model_version"] for p in json.loads(got.stdout)] == ["pumps/1"]
    # the SageMaker registry imports boto3 when it is made: the message names the extra
    sm = ["models", "--sagemaker", "--s3-prefix", "s3://bucket/models", "--image", "img"]
    got = _run(edge_bin, *sm, "list", "pumps", cwd=tmp_path)
    assert got.returncode == 2
    assert got.stderr.splitlines() == [
        "pumpwatch models needs the 'models' extra: pip install 'pumpwatch[models]' "
        "(no module named 'boto3')"
    ]


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[Collector]:
    col = Collector(mosquitto, "gw-edge-only").start()
    yield col
    col.stop()


def test_the_systemd_exec_start_runs_the_agent(
    edge_bin: Path, tmp_path: Path, mosquitto: Mosquitto, collector: Collector
) -> None:
    d = edge_config(tmp_path, mosquitto.port, channels=1, device=collector.device,
                    source={"duration_s": 3})
    cfg = write_toml(tmp_path / "edge.toml", d)
    # README.md's unit, run as written with this venv and config
    (line,) = re.findall(r"^ExecStart=(.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    exe, *args = shlex.split(line)
    assert Path(exe).name == "pumpwatch", line
    args[args.index("--config") + 1] = str(cfg)
    # a finite source: the agent exits 0 once every report was acknowledged
    got = _run(edge_bin, *args, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert "every report was acknowledged" in got.stderr
    assert collector.wait_for(3, 10), collector.identities()

    rec = tmp_path / "pump.wav"
    got = _run(edge_bin, "simulate", "--seconds", "2", "--out", str(rec), cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    got = _run(edge_bin, "replay", str(rec), "--config", str(cfg), "--pump", "p1", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert collector.wait_for(5, 10), collector.identities()
