"""The model server for tests: start it as a subprocess on a free port, and make reports.

Usage (any test, including the consumer's)::

    from tests.infra.model_server import ModelServerProcess, synth_reports, request_body

    with ModelServerProcess(model_dir=None) as srv:        # built-in physics bundle
        client = boto3.client("sagemaker-runtime", endpoint_url=srv.url, ...)
        client.invoke_endpoint(EndpointName=srv.name, Body=request_body(reports),
                               ContentType="application/x-msgpack")

``srv.url`` is ``http://127.0.0.1:PORT``; the server answers ``/ping``,
``/invocations`` and ``/endpoints/{name}/invocations``. :func:`boto_kwargs`
gives the client settings (dummy credentials, no retries) tests want.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import numpy as np

import dsp
from dsp.results import InvocationRequest
from tests.infra.process import stop_process

ROOT = Path(__file__).resolve().parents[2]
BEARING_6205 = dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")
ASSET = dsp.Asset(bearings=[BEARING_6205], vanes=6, rated_rpm=2950.0)


def synth_signal(
    fs: float, n: int, rpm: float, *, seed: int, gain: float = 1.0, outer: float = 0.0,
    inner: float = 0.0,
) -> np.ndarray:
    """1x + blade pass + noise; optional outer/inner-race impact trains ringing at 3.2 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    fr = rpm / 60.0
    x = gain * (0.4 * np.sin(2 * np.pi * fr * t + rng.uniform(0, 6)) + 0.3 * np.sin(
        2 * np.pi * 6 * fr * t + 0.3
    ))
    ring = np.exp(-800.0 * t[:200]) * np.sin(2 * np.pi * 3200.0 * t[:200])
    # impact times jitter by ~0.5 % of a period (rolling elements slip), from their own
    # generator so the noise stays what it was; without it, rounding the times to samples
    # repeats a pattern that puts spurious lines beside the defect's in the envelope
    jitter = np.random.default_rng([seed, 0x51])
    for amp, order in ((outer, 3.5848), (inner, 5.4152)):
        if amp > 0:
            imp = np.zeros(n)
            times = np.arange(0, n / fs, 1 / (order * fr))
            times += jitter.normal(0.0, 0.005 / (order * fr), times.size)
            imp[np.clip(np.round(times * fs).astype(int), 0, n - 1)] = amp
            x += np.convolve(imp, ring)[:n]
    x += 0.3 * gain * rng.standard_normal(n)
    return x.astype(np.float32)


def synth_reports(
    count: int,
    *,
    pumps: Sequence[str] = ("p1",),
    seed: int = 0,
    outer: float = 0.0,
    inner: float = 0.0,
    gain: float = 1.0,
    device: str = "dev1",
    site: str = "lab",
    epoch: int = 7,
    seq0: int = 0,
    cfg: dsp.ReportConfig | None = None,
) -> list[dsp.Report]:
    """``count`` reports cycling over ``pumps``, each from its own synthetic 1 s signal."""
    cfg = cfg or dsp.ReportConfig()
    n = cfg.interval_samples
    out: list[dsp.Report] = []
    chunk = 16
    for start in range(0, count, chunk):
        k = min(chunk, count - start)
        xs = np.stack(
            [
                synth_signal(
                    cfg.fs, n, 2950.0 + 10 * ((start + j) % 3), seed=seed * 100003 + start + j,
                    gain=gain, outer=outer, inner=inner,
                )
                for j in range(k)
            ]
        )
        specs = [dsp.ChannelSpec(asset=ASSET) for _ in range(k)]
        for j, res in enumerate(dsp.analyze(xs, cfg, specs)):
            i = start + j
            out.append(
                dsp.make_report(
                    res, cfg, specs[j], device=device, epoch=epoch, seq=seq0 + i, site=site,
                    pump=pumps[i % len(pumps)], channel="x", t0_ns=i * 1_000_000_000,
                )
            )
    return out


def resonant_reports(
    count: int, *, pumps: Sequence[str] = ("p1",), seed: int = 0, amp: float = 0.3,
    f_hz: float = 3000.0, device: str = "dev1", epoch: int = 7, seq0: int = 0,
) -> list[dsp.Report]:
    """As :func:`synth_reports` (healthy), plus a structural resonance at ``f_hz`` excited
    by broadband noise: a machine unlike the healthy ones that no fault rule names."""
    cfg = dsp.ReportConfig()
    n = cfg.interval_samples
    t = np.arange(300) / cfg.fs
    ring = np.exp(-600.0 * t) * np.sin(2 * np.pi * f_hz * t)
    out: list[dsp.Report] = []
    for start in range(0, count, 16):
        idx = range(start, min(count, start + 16))
        xs = np.stack([
            synth_signal(cfg.fs, n, 2950.0 + 10 * (i % 3), seed=seed * 100003 + i)
            + amp * np.convolve(np.random.default_rng([seed, i]).standard_normal(n), ring)[:n]
            for i in idx]).astype(np.float32)
        specs = [dsp.ChannelSpec(asset=ASSET) for _ in idx]
        out += [dsp.make_report(res, cfg, specs[j], device=device, epoch=epoch, seq=seq0 + i,
                                site="lab", pump=pumps[i % len(pumps)], channel="x",
                                t0_ns=i * 1_000_000_000)
                for j, (i, res) in enumerate(zip(idx, dsp.analyze(xs, cfg, specs), strict=True))]
    return out


def request_body(reports: Sequence[dsp.Report], *, json: bool = False) -> bytes:
    req = InvocationRequest(v=1, reports=list(reports))
    return msgspec.json.encode(req) if json else msgspec.msgpack.encode(req)


def boto_kwargs(url: str) -> dict[str, Any]:
    """Client settings for a local server: dummy credentials, region, no retries."""
    from botocore.config import Config

    return {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "config": Config(retries={"total_max_attempts": 1, "mode": "standard"},
                         connect_timeout=5, read_timeout=30),
    }


class ModelServerProcess:
    """``python -m models.serving.server`` on a free port; stopped (SIGTERM) on exit."""

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        registry: Path | None = None,
        name: str = "pumpwatch",
        extra: Sequence[str] = (),
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        module: str = "models.serving.server",
    ) -> None:
        self.name = name
        self.log_path = log_path  # the server's stderr (its log) goes here when given
        # ``module``: another entry point that ends in models.serving.server.main (e.g.
        # tests.infra.failing_model, which first registers a model kind that fails)
        cmd = [sys.executable, "-m", module, "--port", "0", "--host", "127.0.0.1",
               "--name", name]
        if model_dir is not None:
            cmd += ["--model-dir", str(model_dir)]
        if registry is not None:
            cmd += ["--registry", str(registry)]
        cmd += list(extra)
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.cmd = cmd
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("w") if self.log_path is not None else None
        try:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        finally:
            if log is not None:
                log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "listening on http://HOST:PORT"
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"model server did not start: {line!r} (cmd {self.cmd})")
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"model server at {self.url} not healthy after {timeout}s")

    def run_to_exit(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the server expecting it to exit by itself (a configuration it refuses)."""
        return subprocess.run(self.cmd, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ModelServerProcess:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
