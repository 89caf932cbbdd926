"""Envelope band tracking: one demodulation band per channel, kept across reports.

Theory of operation
-------------------
Spectral kurtosis (SK) from one report is a noisy statistic: on a steady
machine several candidate bands (see :mod:`dsp.envelope`) often lie within
the estimate's scatter of each other, so choosing the argmax afresh every
report makes the band hop and the envelope line heights jump. A
:class:`BandState` per channel instead carries the evidence from report to
report. The rules, applied once per report interval (never per block: the
framer delivers intervals, so chunking cannot change the answer):

1. **Start.** A channel without state (stream start, restart after a gap,
   rate change) runs the full candidate search, adopts the argmax and seeds
   each candidate's *score* with its SK.
2. **Score.** A candidate's score is the average of its SK over the searches
   so far: a running mean for the first ``1 / alpha`` searches, then an
   exponential average with weight ``alpha`` (default 0.25: a horizon of
   about 7 searches, i.e. about a minute of 1 s reports between re-selections).
3. **Search schedule.** Every report computes the envelope in the band in use
   and that band's SK (``sk_now``). The full search runs only when

   * the channel is warming up (its first ``warmup`` reports, default 4), or
   * ``search_every`` reports (default 8) have passed since the last search, or
   * the last search found a challenger (rule 4: it is confirmed on the next
     reports, not ``search_every`` later), or
   * the band in use changed: ``|sk_now - score[band]| > margin(score[band])``
     (a fault grows or vanishes there, or its resonance moved away).

   So a steady channel searches on 1 report in ``search_every``: the
   candidate search, the costliest part of the envelope, is skipped on the rest.
4. **Re-selection (hysteresis).** At a search, the best-scoring candidate
   *challenges* the band in use when ``score[best] > score[band] +
   margin(score[band])``, with ``margin(s) = margin_rel * max(s, 0) +
   margin_abs`` (defaults 20 % and 0.2: the SK of Gaussian noise over a band
   of M samples scatters by about 2/sqrt(M), below 0.07 for the >= 1000-sample
   bands of a 1 s report, so the absolute margin is several times the scatter
   of a score). After ``confirm`` consecutive challenged searches (default 3)
   the band switches to the best-scoring candidate. Stated bounds (tested):

   * a candidate that *lights up elsewhere* (its SK rises above its old score
     by more than ``(margin + gap) / alpha``, ``gap`` being how far its score
     was below the band in use's, i.e. 4-5 margins) is adopted within
     ``search_every + confirm - 1`` reports (10 by default), however the
     change falls in the schedule; a weaker one needs further searches;
   * when the *band in use* changes (rule 3's last trigger), every report
     searches until the averages cross: a swap of equal SK between the band
     in use and another completes within ``confirm + 2`` reports (5).

The state is plain data: the caller keeps one per channel and passes it to
the next report's :func:`dsp.envelope_spectrum` (or :func:`dsp.analyze`);
everything here is pure and sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

BandKey = tuple[float, int, float, float]  # (fs Hz, record samples, min bandwidth Hz, floor Hz)


@dataclass(frozen=True, slots=True, kw_only=True)
class BandTracking:
    """The tracker's constants (see the module docstring for the rules they set)."""

    search_every: int = 8  # reports between scheduled candidate searches
    warmup: int = 4  # reports searched after a start
    alpha: float = 0.25  # exponential-average weight of a new search's SK
    margin_rel: float = 0.2  # challenger margin: share of the band's score...
    margin_abs: float = 0.2  # ...plus this (SK is dimensionless)
    confirm: int = 3  # consecutive challenged searches before the band switches

    def __post_init__(self) -> None:
        problems = []
        for name in ("search_every", "warmup", "confirm"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an integer >= 1, got {name}={v!r}")
        if not 0 < self.alpha <= 1:
            problems.append(f"alpha must be in (0, 1], got alpha={self.alpha}")
        if not (self.margin_rel >= 0 and self.margin_abs > 0):
            problems.append(
                "margins must satisfy margin_rel >= 0 and margin_abs > 0, got "
                f"margin_rel={self.margin_rel}, margin_abs={self.margin_abs}"
            )
        if problems:
            raise ValueError("invalid band tracking: " + "; ".join(problems))

    def margin(self, score: float) -> float:
        return self.margin_rel * max(score, 0.0) + self.margin_abs


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class BandState:
    """What one channel's band tracker carries from one report to the next."""

    key: BandKey  # the candidate set the indices below refer to
    band: int  # candidate in use
    score: F64  # (candidates,) averaged SK per candidate; read-only
    searches: int  # candidate searches since the start
    since_search: int  # reports since the last search (0: this report searched)
    streak: int  # consecutive searches at which a challenger beat the band in use

    @classmethod
    def start(cls, key: BandKey, sk: F64) -> BandState:
        """Rule 1: the first report's search picks the argmax and seeds the scores."""
        score = np.array(sk, dtype=np.float64)
        if score.ndim != 1 or score.size == 0:
            raise ValueError(f"sk must be one SK per candidate, got shape {score.shape}")
        score.setflags(write=False)
        return cls(
            key=key, band=int(np.argmax(score)), score=score, searches=1, since_search=0,
            streak=0,
        )

    def wants_search(self, sk_now: float, tracking: BandTracking) -> bool:
        """Rule 3: whether this report (whose band in use has SK ``sk_now``) searches."""
        cur = float(self.score[self.band])
        return (
            self.searches < tracking.warmup
            or self.since_search + 1 >= tracking.search_every
            or self.streak > 0
            or not abs(sk_now - cur) <= tracking.margin(cur)  # NaN counts as a change
        )

    def searched(self, sk: F64, tracking: BandTracking) -> BandState:
        """Rules 2 and 4: fold one search's SK per candidate in, maybe switch band."""
        sk = np.asarray(sk, dtype=np.float64)
        if sk.shape != self.score.shape:
            raise ValueError(f"sk must have shape {self.score.shape}, got {sk.shape}")
        w = max(tracking.alpha, 1.0 / (self.searches + 1))
        score = self.score + w * (np.nan_to_num(sk, nan=0.0) - self.score)
        score.setflags(write=False)
        best = int(np.argmax(score))
        cur = float(score[self.band])
        challenged = best != self.band and float(score[best]) > cur + tracking.margin(cur)
        streak = self.streak + 1 if challenged else 0
        band = self.band
        if streak >= tracking.confirm:
            band, streak = best, 0
        return replace(
            self, band=band, score=score, searches=self.searches + 1, since_search=0, streak=streak
        )

    def quiet(self) -> BandState:
        """A report that did not search: only the schedule advances."""
        return replace(self, since_search=self.since_search + 1)
