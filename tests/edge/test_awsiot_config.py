"""`mqtt.transport = "awsiot"`: AWS IoT Core's defaults and limits in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError

from ._helpers import build, edge_config


def tls_files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, file in (("ca", "AmazonRootCA1.pem"), ("cert", "gw.crt"), ("key", "gw.key")):
        (tmp_path / file).write_text("x")
        out[name] = str(tmp_path / file)
    return out


def test_awsiot_defaults(tmp_path: Path) -> None:
    d = edge_config(tmp_path, 1883, device="gw-0001")
    del d["mqtt"]["port"]
    d["mqtt"] |= {"transport": "awsiot", "tls": tls_files(tmp_path)}
    m = build(d).mqtt
    assert (m.port, m.inflight, m.publish_rate, m.max_message_bytes) == (8883, 100, 100.0, 131072)
    d["mqtt"] |= {"port": 443, "inflight": 50}
    assert (build(d).mqtt.port, build(d).mqtt.inflight) == (443, 50)
    # paho keeps its own defaults
    assert build(edge_config(tmp_path, 1883)).mqtt.inflight == 20


def test_awsiot_limits_are_all_reported(tmp_path: Path) -> None:
    d = edge_config(tmp_path, 8883, device="gw.0001")
    d["mqtt"] |= {
        "transport": "awsiot",
        "inflight": 200,
        "publish_rate": 500.0,
        "max_message_bytes": "256 KiB",
        "client_id": "someone-else",
        "topic_prefix": "a/b/c/d/e/f",  # 5 + 3 = 8 slashes (a/b/c/d/e would be 7: fine)
    }
    with pytest.raises(ConfigError) as err:
        build(d)
    text = "\n".join(err.value.problems)
    for needle in (
        "needs [mqtt.tls] cert and key",
        "inflight must be <= 100",
        "publish_rate must be <= 100/s",
        "max_message_bytes must be <= 128 KiB",
        "thing name",
        "client_id must be the device",
        "AWS IoT allows 7",
    ):
        assert needle in text, needle
    assert len(err.value.problems) == 7


def test_tls_files_must_exist_and_come_in_pairs(tmp_path: Path) -> None:
    d = edge_config(tmp_path, 8883)
    d["mqtt"]["tls"] = {"ca": str(tmp_path / "nope.crt"), "cert": str(tmp_path / "gw.crt")}
    (tmp_path / "gw.crt").write_text("x")
    with pytest.raises(ConfigError) as err:
        build(d)
    assert err.value.problems == [
        f"[mqtt.tls] ca: no such file {str(tmp_path / 'nope.crt')!r}",
        "[mqtt.tls] give both cert and key (mutual TLS) or neither",
    ]
