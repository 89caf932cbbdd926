"""One configuration mechanism: every mistake in a file reported in one run, exit 2.

Per kind (edge, consumer, pump) a file with several mistakes of every class
(wrong type, out of range, unknown key, semantic: hop > nfft, segment >
spool / 4, unknown store scheme, unknown bearing) is checked by ``pumpwatch
config check`` and by the command that runs it, each listing all of them with
their TOML paths and exiting 2 before any side effect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EDGE_BAD = """
device = "gw-01"
site = "lab"
surprise = 1
[report]
nfft = 4096
hop = 5000
[spool]
path = "spool"
max_bytes = "1 MiB"
segment_bytes = "512 KiB"
[mqtt]
port = "x"
[[pumps]]
id = "p01"
bearings = [{ n_balls = 1, ball_d_mm = 7.9, pitch_d_mm = 39.0 }, "nonesuch"]
channels = ["x"]
"""
EDGE_PROBLEMS = [
    "surprise: unknown key",
    "[report] hop must be an integer in 1..nfft (4096), got hop=5000",
    "[spool] segment_bytes=524288 must be <= max_bytes / 4 (262144)",
    "[mqtt] port must be int, got 'x'",
    "[pumps.p01.bearings.0] n_balls must be >= 3, got 1",
    "[pumps.p01.bearings.1] unknown bearing designation 'nonesuch'",
]

CLOUD_BAD = """
[mqtt]
port = "x"
group = "a/b"
hots = "broker"
[batch]
max_size = 0
[store]
url = "mysql://x"
[consumer]
queue_size = 10
[endpoint]
breaker_open_s = 10.0
breaker_open_max_s = 1.0
"""
CLOUD_PROBLEMS = [
    "[mqtt] port must be int, got 'x'",
    "[mqtt] group must be matching",
    "[mqtt] hots: unknown key",
    "[batch] max_size must be >= 1, got 0",
    "[store] url has an unknown scheme 'mysql'",
    "[endpoint] breaker_open_max_s=1.0 must be >= breaker_open_s=10.0",
]

PUMP_BAD = """
name = "p"
vanez = 5
[speed]
rpm = -3.0
[[bearings]]
designation = "9999"
[[sensors]]
name = "a"
axis = "diagonal"
[[faults]]
kind = "rust"
severity = 0.5
"""
PUMP_PROBLEMS = [
    "vanez: unknown key",
    "[speed] speed.rpm must be in (0, 60000], got rpm=-3.0",
    "[bearings.0] unknown bearing designation '9999'",
    "[sensors.0] axis must be one of 'horizontal', 'vertical', 'axial', got 'diagonal'",
    "[faults.0] kind must be one of",
]


def _pumpwatch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pumpwatch", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _assert_all(err: str, path: Path, problems: list[str]) -> None:
    for p in problems:
        assert f"{path}: {p}" in err, f"{p!r} not in:\n{err}"


@pytest.mark.parametrize(("kind", "text", "problems"), [
    ("edge", EDGE_BAD, EDGE_PROBLEMS),
    ("cloud", CLOUD_BAD, CLOUD_PROBLEMS),
    ("pump", PUMP_BAD, PUMP_PROBLEMS),
])
def test_config_check_lists_every_mistake_in_one_run(
    tmp_path: Path, kind: str, text: str, problems: list[str]
) -> None:
    path = tmp_path / f"{kind}.toml"
    path.write_text(text)
    r = _pumpwatch("config", "check", str(path))  # the kind detected from the keys
    assert r.returncode == 2, r.stderr
    _assert_all(r.stderr, path, problems)
    assert f"{path}: {len(problems)} problems" in r.stderr
    forced = _pumpwatch("config", "check", str(path), "--kind", kind)
    assert forced.returncode == 2 and forced.stderr == r.stderr


def test_the_commands_exit_2_with_every_mistake_before_any_side_effect(tmp_path: Path) -> None:
    edge = tmp_path / "edge.toml"
    edge.write_text(EDGE_BAD)
    r = _pumpwatch("edge", "--config", str(edge), cwd=tmp_path)
    assert r.returncode == 2
    _assert_all(r.stderr, edge, EDGE_PROBLEMS)
    assert not (tmp_path / "spool").exists()  # the spool was never opened

    cloud = tmp_path / "cloud.toml"
    cloud.write_text(CLOUD_BAD)
    r = _pumpwatch("cloud", "--config", str(cloud), cwd=tmp_path)
    # exit 2 (systemd's RestartPreventExitStatus=2 does not restart into it), not 1 at run time
    assert r.returncode == 2
    _assert_all(r.stderr, cloud, CLOUD_PROBLEMS)
    # only the store scheme wrong: still a config error, found before anything starts
    only = tmp_path / "store.toml"
    only.write_text('[store]\nurl = "mysql://x"\n')
    r = _pumpwatch("cloud", "--config", str(only), cwd=tmp_path)
    assert r.returncode == 2 and "[store] url has an unknown scheme 'mysql'" in r.stderr

    pump = tmp_path / "pump.toml"
    pump.write_text(PUMP_BAD)
    r = _pumpwatch("simulate", "--pump", str(pump), "--seconds", "1", "--out",
                   str(tmp_path / "rec.npz"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    _assert_all(r.stderr, pump, PUMP_PROBLEMS)
    assert not (tmp_path / "rec.npz").exists()


@pytest.mark.parametrize("path", ["edge/example.toml", "simulator/examples/pump.toml",
                                  "docker/compose/cloud.toml"])
def test_valid_files_pass_and_their_kind_is_detected(path: str) -> None:
    assert (ROOT / path).is_file(), f"{path} is part of the checkout"
    r = _pumpwatch("config", "check", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: valid ")


def test_a_pump_without_vanes_is_named_as_a_machine_without_an_impeller(tmp_path: Path) -> None:
    """No vanes means no impeller to the model (cavitation is never named): the check says
    so for that pump, and not for one that states its vanes."""
    text = (ROOT / "edge/example.toml").read_text()
    assert "\nvanes = 6" in text
    path = tmp_path / "edge.toml"
    path.write_text(text.replace("\nvanes = 6", "\n# vanes unset"))
    r = _pumpwatch("config", "check", str(path))
    assert r.returncode == 0, r.stderr
    assert "note: pump p101 states no vanes" in r.stdout and "cavitation" in r.stdout
    assert "note:" not in _pumpwatch("config", "check", "edge/example.toml").stdout


def test_a_file_of_no_recognisable_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('device = "gw"\nendpoint = { name = "e" }\n')  # edge and cloud keys
    r = _pumpwatch("config", "check", str(path))
    assert r.returncode == 2 and "give --kind edge|cloud|pump" in r.stderr


@pytest.mark.parametrize(("kind", "example"), [("edge", "edge/example.toml"),
                                               ("pump", "simulator/examples/pump.toml"),
                                               ("cloud", None)])
def test_schema_is_generated_from_the_structs(kind: str, example: str | None) -> None:
    r = _pumpwatch("config", "schema", kind)
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    root = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    assert root["type"] == "object"
    if example is not None:  # every key of the documented example is in the schema
        data = tomllib.loads((ROOT / example).read_text())
        assert set(data) <= set(root["properties"])
    if kind == "edge":
        spool = schema["$defs"]["SpoolConfig"]["properties"]["max_bytes"]
        assert {a["type"] for a in spool["anyOf"]} == {"integer", "string"}  # "1 GiB"
        assert root["required"] == ["device", "site", "pumps"]
    if kind == "cloud":
        assert {"mqtt", "endpoint", "batch", "store", "alarms", "metrics"} <= \
            set(root["properties"])
