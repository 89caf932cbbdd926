"""Physics-based vibration synthesis for one pump (all its sensor channels).

Theory of operation
-------------------
A pump's acceleration at each sensor is the sum of

* **shaft-synchronous lines** — running-speed harmonics, blade pass
  (vanes x speed) and its harmonic in a healthy pump; 1x for imbalance;
  2x (strong axially) for misalignment; many harmonics and 1/2-order
  sub-harmonics for looseness; blade-pass growth for flow problems. All are
  periodic in *shaft angle* with a period of two revolutions (because of the
  1/2x lines), so each channel keeps one wave table per component, sampled
  over two revolutions (4096 points, linearly interpolated: errors below
  -70 dB up to 12x), and a block is a table lookup at the shaft angle
  ``revolutions(t) mod 2``. Any speed profile (ramp, drift) then comes free.
  Amplitudes are velocity RMS per order (mm/s), severity 1 putting a radial
  sensor in ISO zone D; they scale linearly with severity, per sample while
  a fault grows and through one cached combined table while it is steady.
  The healthy lines scale with the machine's ``shaft_level`` (a small motor
  or test rig runs at a few tenths of a mm/s); a machine without an impeller
  (``vanes = 0``) has no blade pass.
* **structural resonances excited by broadband forcing** (flow turbulence,
  friction; ``structure_rms`` m/s^2 per channel), plus the sensor's white
  noise floor. A quiet machine whose modes sit at a few kHz thus puts most of
  its acceleration energy there at a low velocity level, as small rigs do.
  Stationary, so each channel holds two periodic noise *banks* of co-prime
  lengths (2^16 and 3^10 samples) coloured by the pump's resonances through
  an FFT; sample ``i`` is the sum of
  ``bank_a[i mod La]`` and ``bank_b[i mod Lb]``, which repeats only after
  La*Lb samples (42 h at 25.6 kHz) and depends on nothing but ``i``.
* **bearing defects**: periodic impacts whenever the defect phase
  (defect order x shaft revolutions) crosses an integer, each delayed by a
  small random jitter (about 1 % of the period) and with a random size. The
  defect orders are the running bearing's (:meth:`PumpBearing.defect_orders`:
  catalog kinematics with the bearing's slip, so lines sit ``slip_pct`` off
  the catalog). Inner race impacts are amplitude-modulated at shaft rate
  (the defect rotates through the load zone). An outer-race defect is
  stationary: with ``position_deg`` given, its impact size follows the static
  load distribution at that angle (Stribeck's, load zone +-90 degrees) plus a
  rotating (unbalance) load share that modulates at 1x -- a defect in the
  load zone rings steadily, one outside it weakly and 1x-modulated; without
  ``position_deg`` the size is constant. Rolling-element impacts are
  modulated at cage rate with depth ``cage_depth`` (the ball carries the
  defect in and out of the load zone: FTF sidebands) and alternate between
  the races, the inner-race strike ``race_ratio`` of the outer one (so 2xBSF
  shows, and BSF the more the two strikes differ: near 1 the spin line is
  weak). A ball's spin axis is not fixed, so its defect faces the contact
  paths only on some spins: with ``spin_wander`` w, each strike independently
  keeps its size or (probability 1/2) loses the share w of it. That moves
  the spin lines' power (2xBSF, BSF) into a broadband envelope floor, by
  ``(1 - w/2)^2 / (1 - w + w^2/2)`` for the lines, while the cage-rate
  modulation stays (real ball faults show weak spin lines beside their cage
  sidebands more often than a clean 2xBSF comb). Impact size grows as
  ``s * 100**(s - 1)`` with severity ``s`` (damage grows exponentially). The
  impulse train rings every structural mode: two-pole resonators with zeros
  at DC, run in parallel as one filter (shared denominator, one ``lfilter``
  with carried state, then a short FIR per channel for its coupling).
  Resonance frequencies, damping and the coupling into each sensor differ
  between pumps.
* **cavitation**: high-frequency random noise (above 2.5 kHz) under a
  log-normal burst envelope (random bursts) that is also pulsed at blade
  pass (bubbles collapse as each vane passes the cutwater: impulsive,
  blade-pass-modulated), from banks like the above. Its level rises with the
  operating point: ``1 + 2 x`` the flow fault's severity (running further off
  the best efficiency point lowers the suction margin).

Then the sensor: its mounting's transfer function (a resonant two-pole
low-pass at the mounted resonance, ``SensorConfig.mount``: flat below, a
peak of about Q at it, -40 dB/decade above; left out when the resonance is
above 0.45 fs or the mount is ideal), then the chain: clip at the
full-scale range and quantize to the ADC's bits (``adc_bits = 0``: ideal).
Output is float32 m/s^2.

Determinism: everything random derives from ``(seed, pump index)``. Noise and
shaft lines depend only on the absolute sample index; impacts draw their
random slip and size from a per-fault stream in impact order, and resonator
and slip carry-over state is kept between calls, so splitting a stream into
different block sizes gives the same samples (to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal
from numpy.typing import NDArray

from .pump import BEARING_FAULTS, FaultConfig, PumpConfig, Resonance

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

TABLE = 1 << 12  # wave-table points per two revolutions (small: stays in cache)
BANK_A = 1 << 16  # co-prime noise bank lengths
BANK_B = 3**10
CHUNK = 32768  # internal chunk (samples): bounds temporaries; big, as per-call overhead dominates

# Velocity RMS (mm/s) per order at severity 1 (healthy: fixed level), radial sensor.
_HEALTHY = {1.0: 0.8, 2.0: 0.3, 3.0: 0.12}
_HEALTHY_BPF = {1: 0.6, 2: 0.2}  # multiples of blade pass
_SYNC_FAULTS: dict[str, dict[float, float]] = {
    "imbalance": {1.0: 10.0},
    "misalignment": {1.0: 3.0, 2.0: 7.0, 3.0: 2.0},
    "looseness": {
        0.5: 1.5,
        1.0: 3.0,
        1.5: 1.0,
        2.0: 2.0,
        2.5: 0.6,
        3.0: 1.4,
        3.5: 0.4,
        4.0: 1.0,
        5.0: 0.8,
        6.0: 0.6,
        7.0: 0.5,
        8.0: 0.4,
        9.0: 0.3,
        10.0: 0.25,
    },
}
_FLOW_BPF = {1: 5.0, 2: 2.0}
# Where each synchronous fault's signature line is (order of shaft speed); bearing faults:
# their impact rate (BPFO, BPFI, 2xBSF, FTF); cavitation has no line.
_SIGNATURE_ORDER = {"imbalance": 1.0, "misalignment": 2.0, "looseness": 0.5}
# Axial sensors see less of the radial forces and more of misalignment.
_AXIAL = {"healthy": 0.5, "imbalance": 0.25, "misalignment": 1.5, "looseness": 0.5, "flow": 0.6}

# Peak ringing acceleration (m/s^2) of one impact at severity 1 with unit coupling.
_IMPACT_PEAK = {"outer_race": 550.0, "inner_race": 550.0, "ball": 400.0, "cage": 250.0}
_SLIP = 0.01  # impact delay spread, fraction of the defect period
_CAVITATION_RMS = 6.0  # m/s^2 RMS at severity 1 inside bursts (on average)
_CAV_FLOW_GAIN = 2.0  # cavitation level x (1 + gain * operating-point severity)
_CAV_PULSE = 4.0  # sharpness of the blade-pass pulse: exp(k (cos - 1))
_CAV_PULSE_SHARE = 0.5  # share of the cavitation envelope pulsed at blade pass
_LOAD_ZONE = 0.5  # Stribeck load-distribution factor epsilon: load zone +-90 degrees
_ROTATING_LOAD = 0.25  # share of the bearing load that rotates with the shaft (unbalance)


def _impact_scale(severity: F64) -> F64:
    """Impact size relative to severity 1: ``s * 100**(s - 1)``.

    Bearing damage grows roughly exponentially: severity 0.2 rings at 0.5 % of
    the final peak, 0.6 at 10 %, 0.8 at a third; severity 1 clips a +-50 g sensor.
    """
    s = np.asarray(severity, dtype=np.float64)
    return s * np.power(100.0, s - 1.0)


def impact_severity(kind: str, peak: float) -> float:
    """The severity (0..1) at which ``kind``'s impacts ring at ``peak`` m/s^2 with unit
    coupling: the inverse of ``_IMPACT_PEAK[kind] * s * 100**(s - 1)``, clamped to 0..1."""
    target = peak / _IMPACT_PEAK[kind]
    if not target > 0:
        return 0.0
    if target >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0  # s * 100**(s - 1) increases on 0..1
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if mid * 100.0 ** (mid - 1.0) < target:  # _impact_scale, in plain floats
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_impact_factor(f: FaultConfig) -> float:
    """The mean size of a bearing fault's impacts relative to its unmodulated peak (0..1):
    the shaft-rate modulation of an inner-race defect, the load an outer-race defect
    carries at its position (static share plus the rotating share's mean), the cage-rate
    modulation, the two race strikes and the spin-axis wander of a rolling-element defect (see
    ``_add_impacts``)."""
    if f.kind == "inner_race":
        return 0.3 + 0.7 * 0.5
    if f.kind == "outer_race":
        if f.position_deg is None:
            return 1.0
        static = load_zone_factor(f.position_deg)
        return (1 - _ROTATING_LOAD) * static + _ROTATING_LOAD * 0.5
    if f.kind == "ball":
        return (1 - 0.5 * f.cage_depth) * 0.5 * (1 + f.race_ratio) * (1 - 0.5 * f.spin_wander)
    return 1.0


def _defect_order(cfg: PumpConfig, f: FaultConfig) -> float:
    o = cfg.bearings[f.bearing].defect_orders()
    return {
        "outer_race": o["bpfo"],
        "inner_race": o["bpfi"],
        "ball": 2 * o["bsf"],
        "cage": o["ftf"],
    }[f.kind]


def draw_resonances(rng: np.random.Generator, fs: float) -> tuple[Resonance, ...]:
    """Two or three structural modes between 2 kHz and ~0.9 Fmax, varying per pump."""
    top = min(9000.0, 0.9 * fs / 2.56)
    k = int(rng.integers(2, 4))
    freqs = np.sort(np.exp(rng.uniform(np.log(min(2000.0, top / 2)), np.log(top), k)))
    return tuple(
        Resonance(float(f), float(rng.uniform(0.03, 0.08)), float(g))
        for f, g in zip(freqs, [1.0, *rng.uniform(0.4, 0.9, k - 1)], strict=True)
    )


def load_zone_factor(position_deg: float) -> float:
    """Static load on a rolling element at ``position_deg`` from the load-zone centre (0..1).

    Stribeck's distribution for a radially loaded ball bearing with zero
    clearance: ``(1 - (1 - cos psi) / (2 eps)) ** 1.5`` inside the load zone
    (``eps = 0.5``: +-90 degrees), 0 outside it.
    """
    u = 1.0 - (1.0 - math.cos(math.radians(position_deg))) / (2 * _LOAD_ZONE)
    return float(max(u, 0.0) ** 1.5)


def mount_filter(fs: float, hz: float, q: float) -> tuple[F64, F64] | None:
    """Biquad ``(b, a)`` of a sensor's mounted resonance: a resonant two-pole low-pass.

    Unit gain at DC, about ``q`` at ``hz``, -40 dB/decade above (the bilinear
    transform, pre-warped at ``hz``); None when ``hz`` is above 0.45 fs (the
    mounting then shapes nothing the record holds but a gentle rise near
    Nyquist, which is left out).
    """
    if hz >= 0.45 * fs:
        return None
    w0 = 2 * math.pi * hz / fs
    alpha = math.sin(w0) / (2 * q)
    c = math.cos(w0)
    b = np.array([(1 - c) / 2, 1 - c, (1 - c) / 2])
    a = np.array([1 + alpha, -2 * c, 1 - alpha])
    return b / a[0], a / a[0]


def _resonance_response(f: F64, r: Resonance) -> NDArray[np.complex128]:
    """Acceleration response of a mode, peak 1 at its natural frequency."""
    u = f / r.freq_hz
    return (2j * r.damping * u) / (1 - u * u + 2j * r.damping * u)


def _bank(rng: np.random.Generator, n: int, shape: NDArray[np.complex128] | None) -> F64:
    """A periodic stationary Gaussian sequence of length ``n``, unit RMS, spectrum ``shape``."""
    w = rng.standard_normal(n)
    if shape is not None:
        w = scipy.fft.irfft(scipy.fft.rfft(w) * shape, n)
    rms = float(np.sqrt(np.mean(w * w)))
    return w / rms if rms > 0 else w


@dataclass
class _Impacts:
    """State of one bearing fault's impact train."""

    fault: FaultConfig
    order: float
    phase0: float
    peak: float
    rng: np.random.Generator
    carry: F64  # impulses delayed past the end of the last block


class PumpSynth:
    """Renders consecutive blocks of one pump's channels; call :meth:`render` in order."""

    def __init__(self, cfg: PumpConfig, *, seed: int, index: int = 0) -> None:
        self.cfg = cfg
        fs = cfg.fs
        ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, index])
        r_res, r_tab, r_bank, r_imp, r_cav = (np.random.default_rng(s) for s in ss.spawn(5))
        self.resonances = cfg.resonances or draw_resonances(r_res, fs)
        nch = len(cfg.sensors)
        nres = len(self.resonances)
        self.coupling = r_res.uniform(0.4, 1.0, (nch, nres)) * np.array(
            [r.gain for r in self.resonances]
        )
        self.coupling[:, 0] = np.maximum(self.coupling[:, 0], 0.7)
        self.fr0 = cfg.speed.rpm / 60.0
        axial = np.array([s.axis == "axial" for s in cfg.sensors])

        # --- wave tables (per channel, per component) --------------------------------------
        theta = np.arange(TABLE) * (4 * np.pi / TABLE)  # two revolutions

        def table(lines: dict[float, float], comp: str) -> F32:
            out = np.zeros((nch, TABLE))
            for order, v_mm_s in lines.items():
                a_pk = v_mm_s * 1e-3 * math.sqrt(2) * 2 * math.pi * order * self.fr0
                scale = np.where(axial, _AXIAL.get(comp, 1.0), 1.0) * r_tab.uniform(0.8, 1.2, nch)
                phase = r_tab.uniform(0, 2 * np.pi, nch)
                out += (a_pk * scale)[:, None] * np.cos(order * theta[None, :] + phase[:, None])
            return out.astype(np.float32)

        bpf = float(cfg.vanes)
        healthy = dict(_HEALTHY)
        for k, v in _HEALTHY_BPF.items() if cfg.vanes else ():
            healthy[k * bpf] = healthy.get(k * bpf, 0.0) + v
        healthy = {k: v * cfg.shaft_level for k, v in healthy.items()}
        self.healthy_table = table(healthy, "healthy")
        self.sync_faults: list[tuple[FaultConfig, F32]] = []
        for f in cfg.faults:
            if f.kind in _SYNC_FAULTS:
                self.sync_faults.append((f, table(_SYNC_FAULTS[f.kind], f.kind)))
            elif f.kind == "flow":
                lines = {k * bpf: v for k, v in _FLOW_BPF.items()}
                self.sync_faults.append((f, table(lines, "flow")))

        # --- noise banks: structure response + flow turbulence + sensor floor ------------------
        def shaped(n: int, c: int) -> NDArray[np.complex128]:
            f = scipy.fft.rfftfreq(n, 1 / fs)
            h = np.zeros(f.shape, dtype=np.complex128)
            for g, r in zip(self.coupling[c], self.resonances, strict=True):
                h += g * _resonance_response(f, r)
            return h

        self.bank_a = np.empty((nch, BANK_A + CHUNK), dtype=np.float32)
        self.bank_b = np.empty((nch, BANK_B + CHUNK), dtype=np.float32)
        for c in range(nch):
            for bank, n in ((self.bank_a, BANK_A), (self.bank_b, BANK_B)):
                x = cfg.structure_rms * _bank(r_bank, n, shaped(n, c))
                x += cfg.noise_floor * _bank(r_bank, n, None)
                x *= 1 / math.sqrt(2)  # two banks add
                bank[c, :n] = x
                bank[c, n:] = x[:CHUNK]
        self.bank_off = r_bank.integers(0, BANK_A * BANK_B, nch)

        # --- bearing impacts --------------------------------------------------------------------
        self.impacts: list[_Impacts] = []
        for f in cfg.faults:
            if f.kind in BEARING_FAULTS:
                frng = np.random.default_rng(r_imp.integers(0, 2**63))
                order = _defect_order(cfg, f)
                slip_max = 4 * _SLIP * fs / (order * self.fr0 * 0.5)
                self.impacts.append(
                    _Impacts(
                        f,
                        order,
                        float(frng.uniform()),
                        _IMPACT_PEAK[f.kind],
                        frng,
                        np.zeros(int(slip_max) + 2),
                    )
                )
        self._ftf_orders = [
            cfg.bearings[imp.fault.bearing].defect_orders()["ftf"] for imp in self.impacts
        ]
        self.load_phase = float(r_imp.uniform(0, 2 * np.pi))
        self.res_ba = []
        for r in self.resonances:
            rad = math.exp(-r.damping * 2 * math.pi * r.freq_hz / fs)
            th = 2 * math.pi * r.freq_hz * math.sqrt(1 - r.damping**2) / fs
            # Two-pole resonator with zeros at DC and Nyquist (an accelerometer sees no
            # static response to a force), scaled so an impact rings with peak 1.
            a = np.array([1.0, -2 * rad * math.cos(th), rad * rad])
            b = np.array([1.0, 0.0, -1.0])
            imp = np.zeros(max(64, int(4 * fs / r.freq_hz)))
            imp[0] = 1.0
            b /= np.abs(scipy.signal.lfilter(b, a, imp)).max()
            self.res_ba.append((b, a))
        # All modes in parallel, as one filter: a shared denominator A = prod(a_r) run once
        # (lfilter costs the same for order 2 or 6), then per channel the numerator
        # N_c = sum_r coupling[c, r] * b_r * prod_{q != r} a_q as a short FIR.
        den = np.array([1.0])
        for _, a in self.res_ba:
            den = np.convolve(den, a)
        parts = []
        for k, (b, _) in enumerate(self.res_ba):
            num = b
            for q, (_, a) in enumerate(self.res_ba):
                if q != k:
                    num = np.convolve(num, a)
            parts.append(num)
        self.res_den = den
        self.res_num_rev = np.ascontiguousarray((self.coupling @ np.array(parts))[:, ::-1])
        self.res_state = np.zeros(den.size - 1)
        self.res_tail = np.zeros(den.size - 1)  # last all-pole outputs, for the FIR
        self.ringing = False

        # --- cavitation ---------------------------------------------------------------------------
        self.cavitation = [f for f in cfg.faults if f.kind == "cavitation"]
        if self.cavitation:
            self.cav_a = np.empty((nch, BANK_A + CHUNK), dtype=np.float32)
            self.cav_b = np.empty((nch, BANK_B + CHUNK), dtype=np.float32)
            env_a = np.empty(BANK_A + CHUNK, dtype=np.float32)
            env_b = np.empty(BANK_B + CHUNK, dtype=np.float32)
            for bank, envb, n in ((self.cav_a, env_a, BANK_A), (self.cav_b, env_b, BANK_B)):
                f = scipy.fft.rfftfreq(n, 1 / fs)
                hp = np.clip((f - 1500.0) / 1000.0, 0, 1).astype(np.complex128)  # >= 2.5 kHz
                for c in range(nch):
                    x = _bank(r_cav, n, hp * (1 + shaped(n, c))) / math.sqrt(2)
                    bank[c, :n], bank[c, n:] = x, x[:CHUNK]
                lp = (f < 40.0).astype(np.complex128)  # burst envelope: bandwidth 40 Hz
                g = _bank(r_cav, n, lp) / math.sqrt(2)
                envb[:n], envb[n:] = g, g[:CHUNK]
            self.cav_env = (env_a, env_b)
            self.cav_off = r_cav.integers(0, BANK_A * BANK_B, nch + 1)
            # blade-pass pulse exp(k (cos - 1)), normalised to mean 1 over a vane passage
            self.cav_pulse_mean = float(np.exp(-_CAV_PULSE) * np.i0(_CAV_PULSE))
            self.cav_flow = [f for f in cfg.faults if f.kind == "flow"]

        # --- sensor mounting: a resonant low-pass per channel, state carried ------------------
        self.mounts: list[tuple[int, F64, F64]] = []
        self.mount_state: list[F64] = []
        for c, sensor in enumerate(cfg.sensors):
            res = sensor.mount_resonance()
            ba = mount_filter(fs, *res) if res is not None else None
            if ba is not None:
                self.mounts.append((c, *ba))
                self.mount_state.append(np.zeros(2))

        self._resonances_hz = tuple(r.freq_hz for r in self.resonances)
        self._orders0 = cfg.bearings[0].defect_orders() if cfg.bearings else {}
        # The frequency (as an order of shaft speed) where each fault shows first.
        self._fault_orders: dict[str, float] = {}
        for f in cfg.faults:
            if f.kind in BEARING_FAULTS:
                self._fault_orders[f.kind] = _defect_order(cfg, f)
            elif f.kind in _SIGNATURE_ORDER:
                self._fault_orders[f.kind] = _SIGNATURE_ORDER[f.kind]
            elif f.kind == "flow":
                self._fault_orders[f.kind] = float(cfg.vanes)
        self.full_scale = [s.full_scale_ms2 for s in cfg.sensors]
        # ADC step (m/s^2 per code; 0 = ideal chain) and largest code, per channel
        self.adc_step = np.array(
            [
                fsc / (2 ** (s.adc_bits - 1) - 1) if fsc else 0.0
                for s, fsc in zip(cfg.sensors, self.full_scale, strict=True)
            ]
        )
        self.adc_top = np.array([2.0 ** (s.adc_bits - 1) - 1 for s in cfg.sensors])
        self._table_key: tuple[float, ...] | None = None
        self._table_cache = (self.healthy_table, self.healthy_table)
        self.next_index = 0

    # ------------------------------------------------------------------------------------------
    @property
    def channels(self) -> tuple[str, ...]:
        return self.cfg.channels

    def severity(self, t: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for f in self.cfg.faults:
            out[f.kind] = max(out.get(f.kind, 0.0), f.severity_scalar(t))
        return out

    def render(
        self, i0: int, n: int, out: F32 | None = None, *, sensor_chain: bool = True
    ) -> tuple[F32, dict[str, Any]]:
        """Samples ``i0 .. i0+n-1`` of every channel (m/s^2) and the block's ground truth.

        ``out`` (channels, n) float32 receives the samples when given;
        ``sensor_chain=False`` leaves clipping and quantization to the caller.
        """
        if i0 != self.next_index:
            raise ValueError(f"render must continue at sample {self.next_index}, got {i0=}")
        if out is None:
            out = np.empty((len(self.cfg.sensors), n), dtype=np.float32)
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            part = out[:, s : s + m]
            self._render_chunk(i0 + s, m, part)
            if sensor_chain:  # while the chunk is still in cache
                apply_sensor_chain(part, self.adc_step, self.adc_top)
        self.next_index = i0 + n
        return out, self.truth(i0, n)

    def truth(self, i0: int, n: int) -> dict[str, Any]:
        fs = self.cfg.fs
        t0, t1 = i0 / fs, (i0 + n) / fs
        sp = self.cfg.speed
        rpm = (sp.revolutions_at(t1) - sp.revolutions_at(t0)) / (t1 - t0) * 60.0 if n else sp.rpm
        sev = self.severity((t0 + t1) / 2)
        return {
            "rpm": rpm,
            "severities": sev,
            "labels": sorted(k for k, v in sev.items() if v > 0) or ["healthy"],
            "bearing_frequencies_hz": {k: v * rpm / 60.0 for k, v in self._orders0.items()},
            "blade_pass_hz": self.cfg.vanes * rpm / 60.0,
            "fault_frequencies_hz": {k: o * rpm / 60.0 for k, o in self._fault_orders.items()},
            "resonances_hz": list(self._resonances_hz),
        }

    def _tables(self, sevs: tuple[float, ...]) -> tuple[F32, F32]:
        """Healthy + steady fault wave tables and their forward differences (cached)."""
        if sevs != self._table_key:
            tab = self.healthy_table.copy()
            for (_, ft), v in zip(self.sync_faults, sevs, strict=True):
                if v:
                    tab += np.float32(v) * ft
            self._table_cache = (tab, np.roll(tab, -1, axis=1) - tab)
            self._table_key = sevs
        return self._table_cache

    def _render_chunk(self, i0: int, n: int, out: F32) -> None:
        cfg = self.cfg
        fs = cfg.fs
        rev = cfg.speed.revolutions_block(i0 - 1, n + 1, fs)  # one back, for impact crossings
        t = np.array([i0, i0 + n - 1], dtype=np.float64) / fs  # first and last sample
        # shaft angle mod two revolutions as a table position: index + linear-interp fraction
        ph = rev[1:] * (TABLE / 2)
        pos = ph.astype(np.int64)
        frac = (ph - pos).astype(np.float32)
        pos &= TABLE - 1
        sevs = [self._sev(f, t, i0, n) for f, _ in self.sync_faults]
        steady = tuple(float(v) if isinstance(v, float) else 0.0 for v in sevs)
        tab, dtab = self._tables(steady)
        for c in range(out.shape[0]):  # row by row: 1-D gathers are much faster than axis=1
            row = out[c]
            np.take(dtab[c], pos, out=row)
            row *= frac
            row += tab[c].take(pos)
        for (_, ft), v in zip(self.sync_faults, sevs, strict=True):
            if isinstance(v, np.ndarray):  # severity still growing within this chunk
                for c in range(out.shape[0]):
                    a, b = ft[c].take(pos), ft[c].take((pos + 1) & (TABLE - 1))
                    out[c] += v * (a + frac * (b - a))

        # stationary noise: banks indexed by absolute sample number
        a0 = (i0 + self.bank_off) % BANK_A
        b0 = (i0 + self.bank_off) % BANK_B
        for c in range(out.shape[0]):
            row = out[c]
            row += self.bank_a[c, a0[c] : a0[c] + n]
            row += self.bank_b[c, b0[c] : b0[c] + n]

        if self.cavitation:
            self._add_cavitation(out, i0, n, t, rev[1:])
        if self.impacts:
            self._add_impacts(out, i0, n, rev)
        for k, (c, b, a) in enumerate(self.mounts):
            y, self.mount_state[k] = scipy.signal.lfilter(b, a, out[c], zi=self.mount_state[k])
            out[c] = y

    def _sev(self, f: FaultConfig, t: F64, i0: int, n: int) -> F32 | float | None:
        """Severity over the chunk: a scalar when constant, None when zero."""
        s0, s1 = f.severity_at(t)
        if s0 == s1:
            return float(s0) if s0 > 0 else None
        return f.severity_at((i0 + np.arange(n)) / self.cfg.fs).astype(np.float32)

    def _add_cavitation(self, out: F32, i0: int, n: int, t: F64, rev: F64) -> None:
        sev: F32 | float | None = None
        for f in self.cavitation:
            s = self._sev(f, t, i0, n)
            if s is not None:
                sev = s if sev is None else np.maximum(sev, s)
        if sev is None:
            return
        ea, eb = self.cav_env
        k = self.cav_off[-1]
        g = ea[(i0 + k) % BANK_A :][:n] + eb[(i0 + k) % BANK_B :][:n]
        # log-normal bursts, unit mean square: E[exp(2 s g)] = exp(2 s^2) for unit normal g
        op = max((f.severity_scalar(float(t.mean())) for f in self.cav_flow), default=0.0)
        level = np.float32(_CAVITATION_RMS * (1.0 + _CAV_FLOW_GAIN * op))
        env = np.exp(0.5 * g - 0.25) * (level * sev)
        # collapses as each vane passes: a pulse train at blade pass (mean 1)
        vane = np.cos((2 * np.pi * self.cfg.vanes) * np.mod(rev, 1.0)).astype(np.float32)
        pulse = np.exp(np.float32(_CAV_PULSE) * (vane - np.float32(1.0)))
        env *= np.float32(1 - _CAV_PULSE_SHARE) + np.float32(
            _CAV_PULSE_SHARE / self.cav_pulse_mean) * pulse
        for c in range(out.shape[0]):
            o = self.cav_off[c]
            x = self.cav_a[c, (i0 + o) % BANK_A :][:n] + self.cav_b[c, (i0 + o) % BANK_B :][:n]
            out[c] += env * x

    def _add_impacts(self, out: F32, i0: int, n: int, rev: F64) -> None:
        """Impulse trains of all bearing faults, rung through every resonance."""
        fs = self.cfg.fs
        u: F64 | None = None
        for i, imp in enumerate(self.impacts):
            theta = imp.order * rev + imp.phase0
            k0, k1 = math.floor(theta[0]) + 1, math.floor(theta[-1])
            lead = imp.carry
            train = np.zeros(n + lead.size)
            train[: lead.size] += lead
            if k1 >= k0:
                ks = np.arange(k0, k1 + 1, dtype=np.float64)
                p = np.interp(ks, theta, np.arange(-1, n, dtype=np.float64))  # in (-1, n-1]
                kind = imp.fault.kind
                wander = imp.fault.spin_wander if kind == "ball" else 0.0
                # a third draw only where it is used: other faults keep their streams
                draws = imp.rng.standard_normal((ks.size, 3 if wander > 0 else 2))
                period = fs / (imp.order * self.fr0)
                delay = np.minimum(np.abs(draws[:, 0]) * _SLIP * period, lead.size - 2)
                rev_k = np.interp(p, np.arange(-1, n, dtype=np.float64), rev)
                sev = imp.fault.severity_at((i0 + p) / fs)
                amp = imp.peak * _impact_scale(sev) * np.maximum(1 + 0.15 * draws[:, 1], 0.2)
                if kind == "inner_race":
                    amp *= 0.3 + 0.7 * 0.5 * (1 + np.cos(2 * np.pi * rev_k + self.load_phase))
                elif kind == "outer_race" and imp.fault.position_deg is not None:
                    # stationary defect: static load at its angle + the rotating load at 1x
                    static = load_zone_factor(imp.fault.position_deg)
                    rot = 0.5 * (1 + np.cos(2 * np.pi * rev_k + self.load_phase))
                    amp *= (1 - _ROTATING_LOAD) * static + _ROTATING_LOAD * rot
                elif kind == "ball":
                    ftf = self._ftf_orders[i]
                    d = imp.fault.cage_depth
                    amp *= (1 - d) + d * 0.5 * (
                        1 + np.cos(2 * np.pi * ftf * rev_k + self.load_phase))
                    # outer / inner race strike
                    amp *= np.where(ks % 2 == 0, 1.0, imp.fault.race_ratio)
                    if wander > 0:  # the defect misses the contact path on half the spins
                        amp *= np.where(draws[:, 2] > 0, 1.0, 1.0 - wander)
                # ceil: a crossing between the previous block's last sample and this one's
                # first lands on the first, however the stream is split.
                j = np.ceil(p + delay).astype(np.int64)
                np.add.at(train, j, amp)
            imp.carry = train[n:].copy()
            if np.any(train[:n]):
                u = train[:n] if u is None else u + train[:n]
        if u is None and not self.ringing:
            return
        if u is None:
            u = np.zeros(n)
        self.ringing = True
        w, self.res_state = scipy.signal.lfilter([1.0], self.res_den, u, zi=self.res_state)
        wext = np.concatenate([self.res_tail, w])
        self.res_tail = wext[n:]
        taps = self.res_num_rev.shape[1]
        shifted = np.stack([wext[k : k + n] for k in range(taps)])  # (taps, n): w[j - taps + 1 + k]
        out += (self.res_num_rev @ shifted).astype(np.float32)
        if not np.any(u) and np.abs(self.res_state).max() < 1e-9:
            self.ringing = False


_MAGIC = np.float32(1.5 * 2**23)  # adding and subtracting it rounds float32 to an integer


def apply_sensor_chain(out: F32, step: F64, top: F64) -> None:
    """In place: clip at +-``top`` codes of ``step`` m/s^2 and quantize (rows with step 0: ideal).

    Vectorized over channels. Rounding is to nearest (ties to even) via the
    float32 magic-number trick, valid for codes below 2^22; wider ADCs round in
    float64.
    """
    live = step > 0
    if not live.any():
        return
    rows = slice(None) if live.all() else np.flatnonzero(live)
    x = out[rows]
    inv = (1.0 / step[live]).astype(np.float32)[:, None]
    t = top[live].astype(np.float32)[:, None]
    if float(top[live].max()) < 2**22:
        x *= inv
        np.minimum(x, t, out=x)
        np.maximum(x, -t, out=x)
        x += _MAGIC
        x -= _MAGIC
    else:
        y = np.clip(np.rint(x.astype(np.float64) * inv), -t, t)
        x[...] = y
    x *= step[live].astype(np.float32)[:, None]
    if not isinstance(rows, slice):
        out[rows] = x
