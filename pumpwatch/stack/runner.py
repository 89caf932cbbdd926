"""The local stack: prepare state, start the components, show status, stop cleanly, score a demo.

Theory of operation
-------------------
1. **Prepare** (idempotent, so a second start reuses everything): the local
   CA and one certificate per identity (broker, each edge device, the
   consumer, the dashboard/monitor), the Mosquitto config and ACL, the
   consumer's and each agent's config; the classifier is trained on first
   start (``pumpwatch train``, progress shown) and registered, approved and
   deployed in ``state/registry``.
2. **Start**, each waiting for the previous to be ready: Mosquitto (mTLS
   listener accepts TCP) -> model server (``GET /ping`` is 200) -> consumer
   (connected to the broker) -> dashboard (port open) -> edge agents.
3. **Run**: once every agent's healthy period (``healthy_s`` of stream time)
   is stored, the per-pump baselines are fitted on the archived reports and
   deployed with the classifier as a new registry version; the model server
   hot-reloads it. Faults begin after that (see :mod:`.plan`).
4. **Stop** (Ctrl-C, SIGTERM, a component dying, or the demo's end): agents
   first (they publish their offline status; unsent reports stay spooled),
   then the consumer (drains, acknowledges what it committed), dashboard and
   model server, the broker last (it saves its persistence on SIGTERM).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from . import models
from .lock import StateLock, StateLockedError
from .monitor import StatusFeed, StoreView
from .plan import (
    CONSUMER_ID,
    DASHBOARD_ID,
    ENDPOINT_NAME,
    StackOptions,
    cloud_config,
    dashboard_config,
    devices,
    edge_config,
    ensure_dashboard_token,
    plan_fleet,
)
from .procs import (
    StackError,
    Supervisor,
    check_ports,
    http_ok,
    pumpwatch_argv,
    tcp_open,
    wait_ready,
)
from .score import STANDIN_LABEL, Alarm, alarms_from_table, percentile_ms, score, standin_alarms

_SPOOLED = re.compile(r"stopping: \d+ intervals computed, (\d+) reports spooled this run")
MONITOR_EVERY_S = 300.0  # pumpwatch monitor run, while the stack runs (docs/monitoring.md)
MOSQUITTO = os.environ.get("PUMPWATCH_MOSQUITTO") or shutil.which("mosquitto") or \
    "/usr/sbin/mosquitto"


class Stack:
    """One local stack under one state directory; use :meth:`run_up` or :meth:`run_demo`."""

    def __init__(self, opts: StackOptions, *, out: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.opts = opts
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.fleet = plan_fleet(opts)
        self.by_device = devices(self.fleet)
        self.sup = Supervisor(opts.path("logs"))
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.feed: StatusFeed | None = None
        self.view = StoreView(opts.store_path)
        self.run_start_ns = 0
        self.phase = "starting"
        self.model_version = ""
        self.baseline_pumps: list[str] = []
        self.baseline_thread: threading.Thread | None = None
        self.baseline_error = ""
        self.source_start_ns: dict[str, int] = {}
        self.epochs: dict[str, int] = {}
        self._alarms: dict[str, Alarm] = {}
        self._in_shutdown = False
        self.lock = StateLock(opts.state_dir)
        self.monitor_proc: subprocess.Popen[bytes] | None = None
        self.monitor_started = 0.0
        self.monitor_text = "monitor: first run once the baselines are fitted"

    # -- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_reason = signal.Signals(signum).name
        self.stop_event.set()
        if not self._in_shutdown and self.phase in ("starting", "training"):
            raise KeyboardInterrupt  # interrupt a start-up wait; the finally clause cleans up

    def _install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    # -- prepare -----------------------------------------------------------------------------

    def prepare(self) -> None:
        from cloud.pki import init_ca, issue, issued_path, role_of
        from cloud.roles import Role
        from pumpwatch.mosquitto_conf import BrokerConfigError, broker_dir_for, write_broker_config

        o = self.opts
        for d in ("logs", "models", "registry", "edge"):
            o.path(d).mkdir(parents=True, exist_ok=True)
        pki = o.path("pki")
        if not (pki / "ca.crt").is_file():
            init_ca(pki)
        wanted: list[tuple[Role, str]] = [("consumer", CONSUMER_ID), ("dashboard", DASHBOARD_ID),
                                          *(("device", d) for d in self.by_device)]
        for role, name in wanted:
            crt = issued_path(pki, role, name)[0]
            if not crt.is_file() or role_of(crt) != role:  # (re)issue one made before roles
                issue(pki, role, name, force=True)
        try:
            broker, moved = broker_dir_for(o.path("broker"))
            if moved:
                self._say(moved)
            write_broker_config(broker, pki_dir=pki, port=o.broker_port, host="127.0.0.1")
        except BrokerConfigError as exc:
            raise StackError(f"{exc} (use --state)") from None
        o.path("cloud.toml").write_text(cloud_config(o))
        o.path("dashboard.toml").write_text(dashboard_config(o))
        for dev, pumps in self.by_device.items():
            o.path("edge", dev).mkdir(parents=True, exist_ok=True)
            o.path("edge", dev, "edge.toml").write_text(edge_config(o, dev, pumps))

    def prepare_models(self, *, quiet: bool) -> None:
        self.phase = "training"
        models.ensure_trained(self.opts, quiet=quiet)
        self.model_version = models.deploy_trained(self.opts)
        self.phase = "starting"

    # -- start -------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail fast, before any training: ports in use, no broker binary."""
        o = self.opts
        check_ports({
            "broker": (o.broker_port, "--broker-port"),
            "dashboard": (o.dashboard_port, "--dashboard-port"),
            "model server": (o.endpoint_port, "--endpoint-port"),
        })
        if not os.access(MOSQUITTO, os.X_OK):
            raise StackError(f"mosquitto not found at {MOSQUITTO}: install it "
                             "(apt-get install mosquitto) or set PUMPWATCH_MOSQUITTO")

    def start(self) -> None:
        o = self.opts
        self.preflight()  # again: training may have taken minutes
        self.run_start_ns = time.time_ns()
        logs = ("--log-format", o.log_format)  # every component logs as the stack was asked
        self._say("starting broker (mTLS) ...")
        b = self.sup.start("broker", [MOSQUITTO, "-c", str(o.path("broker", "mosquitto.conf"))])
        wait_ready(b, lambda: tcp_open(o.broker_port), timeout_s=15, what="listening")
        self._say("starting model server ...")
        e = self.sup.start("endpoint", pumpwatch_argv(
            *logs, "endpoint", "--registry", str(o.path("registry")),
            "--port", str(o.endpoint_port), "--host", "127.0.0.1", "--name", ENDPOINT_NAME),
            stop_timeout_s=15)
        wait_ready(e, lambda: http_ok(f"{o.endpoint_url}/ping"), timeout_s=60,
                   what="answering /ping")
        self._say("starting consumer ...")
        c = self.sup.start("consumer", pumpwatch_argv(*logs, "cloud", "--config",
                                                      str(o.path("cloud.toml"))),
                           stop_timeout_s=20)
        wait_ready(c, lambda: "mqtt connected" in c.log_tail(40), timeout_s=60,
                   what="connected to the broker")
        self._say("starting dashboard ...")
        token = ensure_dashboard_token(o)
        if token is not None:
            self._say(f"dashboard binds {o.dashboard_host}: bearer token required, in {token}")
        d = self.sup.start("dashboard", pumpwatch_argv(*logs, "dashboard", *o.dashboard_args()))
        probe = "127.0.0.1" if o.dashboard_host in ("0.0.0.0", "::") else o.dashboard_host  # noqa: S104
        wait_ready(d, lambda: tcp_open(o.dashboard_port, probe), timeout_s=60, what="listening")
        self.feed = StatusFeed(o)
        self.feed.start()
        self._say(f"starting {len(self.by_device)} edge agent(s) for {o.pumps} pumps "
                  f"x {o.axes} axes ...")
        for dev in self.by_device:
            self.sup.start(f"edge {dev}", pumpwatch_argv(
                *logs, "edge", "--config", str(o.path("edge", dev, "edge.toml"))),
                stop_timeout_s=15)
        self.phase = "healthy period"

    # -- while running -----------------------------------------------------------------------

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _statuses(self) -> dict[str, dict[str, Any]]:
        """This run's status per device (statuses of earlier runs, retained, are ignored)."""
        if self.feed is None:
            return {}
        out = {}
        for dev, st in self.feed.snapshot().items():
            if dev in self.by_device and float(st.get("ts") or 0) * 1e9 >= self.run_start_ns:
                out[dev] = st
                if st.get("epoch"):
                    self.epochs[dev] = int(str(st["epoch"]), 16)
        return out

    def _update_source_starts(self) -> None:
        for dev, epoch in self.epochs.items():
            if dev not in self.source_start_ns:
                rows = self.view._query(
                    "SELECT min(t0_ns) FROM results WHERE device = ? AND epoch = ?",
                    (dev, epoch - (1 << 64) if epoch >= 1 << 63 else epoch))
                if rows and rows[0][0] is not None:
                    self.source_start_ns[dev] = int(rows[0][0])

    def _maybe_fit_baselines(self) -> None:
        if self.baseline_thread is not None or self.phase != "healthy period":
            return
        self._statuses()  # learns this run's epochs
        self._update_source_starts()
        if len(self.source_start_ns) < len(self.by_device):
            return
        until = min(self.source_start_ns.values()) + round(self.opts.healthy_s * 1e9)
        if time.time_ns() < until + 3_000_000_000:
            return
        self.phase = "fitting baselines"

        def work() -> None:
            try:
                self.model_version, self.baseline_pumps = models.fit_and_deploy_baselines(
                    self.opts, [p.id for p in self.fleet], self.run_start_ns, until)
                self.phase = "monitoring (faults develop)"
            except Exception as exc:  # shown in the status; the stack keeps running
                self.baseline_error = f"baseline fit failed: {exc}"
                self.phase = "monitoring (no baselines)"

        self.baseline_thread = threading.Thread(target=work, name="baselines", daemon=True)
        self.baseline_thread.start()

    def _maybe_monitor(self) -> None:
        """``pumpwatch monitor run`` every :data:`MONITOR_EVERY_S` once monitoring began
        (a subprocess: the stack only wires it); its outcome goes to the status."""
        proc = self.monitor_proc
        if proc is not None:
            if proc.poll() is None:
                return
            self.monitor_proc = None
            self.monitor_text = self._monitor_outcome(proc.returncode)
        if not self.phase.startswith("monitoring") or (
                self.monitor_started and time.monotonic() - self.monitor_started
                < MONITOR_EVERY_S):
            return
        o = self.opts
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.run_start_ns / 1e9))
        with open(o.path("logs", "monitor.json"), "wb") as out, \
                open(o.path("logs", "monitor.log"), "ab") as log:
            self.monitor_proc = subprocess.Popen(
                [sys.executable, "-m", "pumpwatch", "monitor", "--registry",
                 str(o.path("registry")), "--json", "run", "--store", o.store_url,
                 "--out", str(o.path("monitoring")), "--since", since],
                stdout=out, stderr=log)
        self.monitor_started = time.monotonic()

    def _monitor_outcome(self, code: int) -> str:
        try:
            runs = json.loads(self.opts.path("logs", "monitor.json").read_text())["runs"]
        except (OSError, ValueError, KeyError):
            return f"monitor: run failed (exit {code}; see logs/monitor.log)"
        parts = [f"{r['model_version']} {r['status']}"
                 + (f" ({', '.join(r['unexplained'][:3])})" if r["unexplained"] else "")
                 for r in runs]
        return "monitor: " + ("; ".join(parts) or "no histograms yet") + \
            f" (reports in {self.opts.path('monitoring')})"

    def alarms(self) -> tuple[list[Alarm], str]:
        """(alarms of this run, where they come from)."""
        rows = self.view.alarms(self.run_start_ns)
        if rows or self.view.alarms_table_exists():
            return alarms_from_table(rows), "alarms table"
        # the last minute is plenty for 3-of-5 windows; raised stand-in alarms are kept
        recent = self.view.recent_results(max(self.run_start_ns, time.time_ns() - 60 * 10**9))
        mine = [r for r in recent if self.epochs.get(r.device) is not None]
        for a in standin_alarms(mine):
            self._alarms.setdefault(a.pump, a)
        return list(self._alarms.values()), "stand-in"

    def render(self) -> str:
        o = self.opts
        st = self._statuses()
        counts = self.view.counts(self.run_start_ns)
        acked = sum(int(s.get("acked") or 0) for s in st.values())
        backlog_edge = sum(int((s.get("spool") or {}).get("reports") or 0) for s in st.values())
        backlog_cloud = max(0, acked - counts["stored"] - counts["dead_letters"])
        alarms, source = self.alarms()
        phase = self.phase
        if phase == "healthy period" and len(self.source_start_ns) == len(self.by_device):
            due = min(self.source_start_ns.values()) / 1e9 + o.healthy_s + 3 - time.time()
            phase += f" (baselines fitted in {max(0, due):.0f} s)"
        lines = [
            f"pumpwatch up   dashboard {o.dashboard_url}   state {o.state_dir}   "
            f"phase: {phase}",
            f"{'component':18s} {'health':8s} detail",
        ]

        def health(name: str) -> str:
            c = self.sup.get(name)
            return "up" if c.running else f"exit {c.exit_code}"

        lines.append(f"{'broker':18s} {health('broker'):8s} mqtts://localhost:{o.broker_port} "
                     "(mTLS, per-device certificates, ACL)")
        lines.append(f"{'model server':18s} {health('endpoint'):8s} {o.endpoint_url}  model "
                     f"{self.model_version or '?'}"
                     + (f"  baselines: {len(self.baseline_pumps)} pumps"
                        if self.baseline_pumps else ""))
        lines.append(f"{'consumer':18s} {health('consumer'):8s} stored {counts['stored']} "
                     f"({self.view.rate():.1f}/s)  backlog {backlog_cloud}  dead letters "
                     f"{counts['dead_letters']}")
        lines.append(f"{'dashboard':18s} {health('dashboard'):8s} {o.dashboard_url}")
        for dev, pumps in self.by_device.items():
            s = st.get(dev, {})
            link = (s.get("link") or {}).get("state", "-")
            spool = (s.get("spool") or {}).get("reports", "-")
            lines.append(
                f"{'edge ' + dev:18s} {health('edge ' + dev):8s} "
                f"{','.join(p.id for p in pumps)}  {s.get('reports_per_s', 0):5.1f} reports/s  "
                f"spool {spool}  link {link}  dsp {s.get('dsp_load', 0):.2f}")
        lines.append(f"backlog: {backlog_edge} at the edge, {backlog_cloud} at broker/consumer")
        lines.append(self._schedule_text())
        label = "alarms" if source == "alarms table" else "alarms (stand-in, see docs/stack.md)"
        lines.append(f"{label}: {self._alarm_text(alarms) or 'none'}")
        if self.baseline_error:
            lines.append(self.baseline_error)
        lines.append(self.monitor_text)
        return "\n".join(lines)

    def _schedule_text(self) -> str:
        """The injected faults: onset in stream seconds from each agent's start."""
        faulted = [f"{p.id} {p.fault.kind} +{p.fault.onset_s:.0f}s" for p in self.fleet
                   if p.fault is not None]
        healthy = [p.id for p in self.fleet if p.fault is None]
        return (f"faults (ramp {self.opts.ramp_s:.0f} s): {', '.join(faulted) or 'none'}"
                + (f"; healthy: {', '.join(healthy)}" if healthy else ""))

    @staticmethod
    def _alarm_text(alarms: list[Alarm]) -> str:
        """Per pump: episodes by kind, the classes they name, the first one's time."""
        by: dict[str, list[Alarm]] = {}
        for a in sorted(alarms, key=lambda a: a.raised_ns):
            by.setdefault(a.pump, []).append(a)
        parts = []
        for pump, items in sorted(by.items()):
            kinds = collections.Counter(a.kind for a in items)
            named = sorted({a.condition for a in items} - {"healthy", "unknown"})
            when = time.strftime("%H:%M:%S", time.localtime(items[0].raised_ns / 1e9))
            parts.append(f"{pump} " + " ".join(f"{k}x{n}" if n > 1 else k
                                               for k, n in kinds.items())
                         + (f" [{'/'.join(named)}]" if named else "") + f" since {when}")
        return "; ".join(parts)

    def _show(self) -> None:
        text = self.render()
        if self.live:
            width = shutil.get_terminal_size((120, 40)).columns
            self.out.write(redraw(text + "\n\nCtrl-C stops everything.", width))
        else:
            self.out.write(text + "\n\n")
        self.out.flush()

    def _check_components(self) -> None:
        dead = [c for c in self.sup.died() if not (c.name.startswith("edge ")
                                                   and c.exit_code == 0)]
        if dead:
            c = dead[0]
            self.stop_reason = f"{c.name} exited with code {c.exit_code}"
            self._say(f"{self.stop_reason}; last lines of {c.log}:\n{c.log_tail()}")
            self.stop_event.set()

    # -- stop --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._in_shutdown = True
        self.phase = "stopping"
        if self.sup.components:
            self._say("stopping: edge agents, consumer, dashboard, model server, broker ...")
        self.sup.stop_all(order=("edge ", "consumer", "dashboard", "endpoint", "broker"))
        if self.monitor_proc is not None and self.monitor_proc.poll() is None:
            self.monitor_proc.terminate()
            self.monitor_proc.wait(10)
        if self.feed is not None:
            self.feed.stop()
        self.view.close()
        if self.sup.components:
            self._say(f"stopped; logs in {self.opts.path('logs')}, state kept in "
                      f"{self.opts.state_dir} (a second start reuses it)")

    # -- modes -------------------------------------------------------------------------------

    def _lock(self, prog: str) -> int | None:
        """Take the state directory's lock; on refusal print why and return exit code 2."""
        o = self.opts
        try:
            self.lock.acquire({"broker": o.broker_port, "dashboard": o.dashboard_port,
                               "model server": o.endpoint_port})
        except StateLockedError as exc:
            print(f"{prog}: {exc}", file=sys.stderr, flush=True)
            return 2
        return None

    def _interrupted(self, prog: str) -> int:
        """Ctrl-C: one line saying what was interrupted; exit code 130 (128 + SIGINT)."""
        what = {"training": "while training the classifier (nothing deployed; the next "
                "start trains again)",
                "starting": "while starting the components"}.get(
                    self.phase, f"during '{self.phase}'")
        print(f"{prog}: interrupted (Ctrl-C) {what}; stopping", file=sys.stderr, flush=True)
        return 130

    def run_up(self, *, refresh_s: float = 1.0) -> int:
        if (refused := self._lock("pumpwatch up")) is not None:
            return refused
        self._install_signals()
        try:
            self.preflight()
            self.prepare()
            self.prepare_models(quiet=False)
            self.start()
            last_print = 0.0
            while not self.stop_event.is_set():
                self._maybe_fit_baselines()
                self._maybe_monitor()
                self._check_components()
                now = time.monotonic()
                if self.live or now - last_print >= 10.0:
                    self._show()
                    last_print = now
                self.stop_event.wait(refresh_s)
            if self.stop_reason == "SIGINT":
                return self._interrupted("pumpwatch up")
            return 0 if self.stop_reason == "SIGTERM" else 1
        except KeyboardInterrupt:
            return self._interrupted("pumpwatch up")
        except StackError as exc:
            print(f"pumpwatch up: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()
            self.lock.release()

    def run_demo(self, summary: Path | None) -> int:
        if (refused := self._lock("pumpwatch demo")) is not None:
            return refused
        self._install_signals()
        duration = self.opts.duration_s or 60.0
        try:
            self.preflight()
            self.prepare()
            self.prepare_models(quiet=True)
            self.start()
            t_start = time.monotonic()
            edges = [c for c in self.sup.components if c.name.startswith("edge ")]
            last = 0.0
            # the sources stop themselves after duration_s of stream time, then drain and exit
            while not self.stop_event.is_set():
                self._maybe_fit_baselines()
                self._check_components()
                if all(c.poll() is not None for c in edges):
                    break
                if time.monotonic() - t_start > duration + 60:
                    self.stop_reason = "edge agents did not finish in time"
                    break
                if time.monotonic() - last >= 5.0:
                    last = time.monotonic()
                    self._say(self._demo_line(time.monotonic() - t_start))
                self.stop_event.wait(0.5)
            if self.stop_event.is_set():
                if self.stop_reason == "SIGINT":
                    return self._interrupted("pumpwatch demo")
                self._say(f"demo interrupted ({self.stop_reason}); no summary written")
                return 1
            self.sup.stop_many(edges)  # already exited; records their exit
            result = self._drain_and_score(timeout_s=30.0)
            result["duration_s"] = duration
            text = json.dumps(result, indent=2)
            if summary is not None:
                summary.parent.mkdir(parents=True, exist_ok=True)
                summary.write_text(text + "\n")
            self._say(text)
            ok = (result["lost"] == 0 and result["faults_detected"] == result["faults_injected"]
                  and result["false_alarms"] == 0)
            return 0 if ok else 3
        except KeyboardInterrupt:
            return self._interrupted("pumpwatch demo")
        except StackError as exc:
            print(f"pumpwatch demo: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()
            self.lock.release()

    def _demo_line(self, elapsed: float) -> str:
        c = self.view.counts(self.run_start_ns)
        alarms, _src = self.alarms()
        return (f"[{elapsed:5.0f} s] {self.phase}: stored {c['stored']}, dead letters "
                f"{c['dead_letters']}, alarms {len(alarms)}")

    def _published(self, st: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Reports each agent computed and published this run (its stream epoch).

        From the agent's final status (``reports``, published on a clean stop);
        when the broker kept the will instead (the awsiot transport's stop can
        end in it), from the agent's own last log line ``stopping: N intervals
        computed, M reports spooled this run``.
        """
        out: dict[str, int] = {}
        for dev in self.by_device:
            s = st.get(dev, {})
            if s.get("state") == "offline" and "reports" in s:
                out[dev] = int(s["reports"])
                continue
            found = _SPOOLED.findall(self.sup.get(f"edge {dev}").log_tail(40))
            if found:
                out[dev] = int(found[-1])
        return out

    def _drain_and_score(self, *, timeout_s: float) -> dict[str, Any]:
        """Wait (bounded) until every published report is stored or dead-lettered; score."""
        st = self._statuses()
        deadline = time.monotonic() + timeout_s
        published: dict[str, int] = {}
        while True:
            st = self._statuses()
            published = self._published(st)
            done = {d: sum(self.view.epoch_counts(d, self.epochs[d])) for d in published}
            if (len(published) == len(self.by_device)
                    and all(done[d] >= published[d] for d in published)) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        stored = dead = 0
        latencies: list[int] = []
        results = []
        for dev, epoch in self.epochs.items():
            s, d = self.view.epoch_counts(dev, epoch)
            stored += s
            dead += d
            rows = self.view.results(dev, epoch)
            results += rows
            latencies += [r.stored_ns - (r.t0_ns + r.duration_ns) for r in rows]
        self._update_source_starts()
        table = self.view.alarms(self.run_start_ns)
        if table or self.view.alarms_table_exists():
            alarms, source = alarms_from_table(table), "alarms table (cloud alarm writer)"
        else:
            alarms, source = standin_alarms(results), STANDIN_LABEL
        pub = sum(published.values())
        horizon = max((r.t0_ns + r.duration_ns for r in results), default=time.time_ns())
        verdict = score(fleet=self.fleet, source_start_ns=self.source_start_ns, alarms=alarms,
                        horizon_ns=horizon)
        unacked = {d: int((s.get("spool") or {}).get("reports") or 0) for d, s in st.items()}
        return {
            "pumps_total": self.opts.pumps,
            "axes": self.opts.axes,
            "agents": len(self.by_device),
            "published": pub,
            "stored": stored,
            "dead_lettered": dead,
            "lost": pub - stored - dead,
            "left_in_edge_spools": sum(unacked.values()),
            "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99),
            "latency": "window end (t0 + interval) -> result committed, one machine's clock",
            "detection_source": source,
            "model_version": self.model_version,
            "baselines_for": self.baseline_pumps,
            "healthy_s": self.opts.healthy_s,
            **verdict,
        }


def redraw(text: str, width: int) -> str:
    """The escape sequences that repaint ``text`` in place, each line cut to ``width``.

    Cursor home, then every line overwritten and the rest of it erased
    (``ESC[K``), then everything below erased (``ESC[J``): no full-screen
    clear, so nothing flickers, and no line wraps, so the status keeps its shape
    in a narrow terminal (a cut line ends in ``~``).
    """
    rows = []
    for line in text.splitlines():
        if len(line) > width:
            line = line[: max(0, width - 1)] + "~"
        rows.append(line + "\x1b[K")
    return "\x1b[H" + "\n".join(rows) + "\n\x1b[J"


def demo_options(opts: StackOptions, duration_s: float) -> StackOptions:
    """The demo's fault timing: baselines from the first ~30 %, then quick, strong faults."""
    from dataclasses import replace

    healthy = max(8.0, round(0.25 * duration_s))
    faulted = max(1, opts.pumps - len(range(1, opts.pumps, 4)))
    ramp = max(5.0, round(0.15 * duration_s))
    spacing = min(3.0, max(0.5, 0.2 * duration_s / faulted))
    return replace(opts, duration_s=duration_s, healthy_s=healthy, fault_delay_s=5.0,
                   onset_spacing_s=spacing, ramp_s=ramp)


def default_state() -> Path:
    return Path(os.environ.get("PUMPWATCH_STATE", "state"))
