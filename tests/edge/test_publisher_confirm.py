"""The publisher with end-to-end confirmation: PUBACK keeps, confirmations settle, the
confirm timeout publishes again under the same window and rate (sans-IO, time passed in)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from dsp.confirm import RangeSet, encode_confirmation
from edge.publisher import Publisher
from edge.spool import Key, Spool


def _pub(tmp_path: Path, **kw: object) -> tuple[Publisher, Spool]:
    sp = Spool(tmp_path / "spool", max_bytes=1 << 24)
    pub = Publisher(sp, "dev", **kw)  # type: ignore[arg-type]
    pub.on_connect(0.0)
    return pub, sp


def confirming(pub: Publisher) -> bool:
    return pub.confirming  # (a call, so that mypy does not narrow the property across steps)


def _fill(sp: Spool, n: int, epoch: int = 1) -> None:
    sp.append([(epoch, i, msgspec.msgpack.encode(bytes(500))) for i in range(n)])


def _send_all(pub: Publisher, now: float, token0: int) -> list[tuple[int, tuple[Key, ...]]]:
    sent = []
    for k, out in enumerate(pub.poll(now)):
        pub.sent(out, token0 + k)
        sent.append((token0 + k, out.keys))
    return sent


def test_puback_keeps_reports_until_confirmed(tmp_path: Path) -> None:
    pub, sp = _pub(tmp_path, max_message_bytes=8192, rate=1e6, inflight=100,
                   confirm_timeout_s=30.0)
    _fill(sp, 40)
    sent = _send_all(pub, 0.0, 1)
    for token, _keys in sent:
        pub.on_ack(token, True, "Success", 1.0)
    assert sp.stats.records == 40 and sp.stats.unconfirmed == 40 and sp.pending == 0
    assert pub.poll(2.0) == []  # nothing to send before the timeout
    assert pub.on_confirm(encode_confirmation("dev", [(1, RangeSet([(0, 29)]))])) == 30
    assert pub.on_confirm(encode_confirmation("dev", [(1, RangeSet([(0, 29)]))])) == 0
    assert pub.on_confirm(encode_confirmation("other", [(1, RangeSet([(30, 39)]))])) == 0
    assert pub.on_confirm(b"\xc1") == 0
    assert pub.stats.confirmations_invalid == 2
    assert sp.stats.records == 10
    assert 0 < pub.next_wakeup(2.0) <= 1.0


def test_unconfirmed_reports_go_out_again_after_the_timeout_in_the_window(
    tmp_path: Path,
) -> None:
    pub, sp = _pub(tmp_path, max_message_bytes=8192, rate=1e6, inflight=2,
                   confirm_timeout_s=30.0, rng=lambda: 0.0)
    _fill(sp, 60)
    token = 1
    first: list[tuple[int, int]] = []
    now = 0.0
    while sp.pending:  # the normal drain, two messages in flight at a time
        for t, keys in _send_all(pub, now, token):
            first += keys
            pub.on_ack(t, True, "Success", now)
            token += 1
        now += 0.01
    assert first == [(1, i) for i in range(60)]
    assert pub.poll(now + 29.0) == []
    # nothing confirmed for the timeout: a probe of the oldest, one in-flight window's
    # worth (not all 60), out at most `inflight` messages at once
    outs = pub.poll(now + 31.0)
    assert len(outs) == 2
    assert outs[0].keys[0] == (1, 0)
    assert sp.stats.republished == pub.probe_reports == sum(len(o.keys) for o in outs) < 60
    assert pub.poll(now + 60.0) == []  # the next silent round waits twice as long
    for k, o in enumerate(outs):
        pub.sent(o, 1000 + k)
    # the confirmation arrives now: in-flight copies are settled too
    pub.on_confirm(encode_confirmation("dev", [(1, RangeSet([(0, 59)]))]))
    assert sp.stats.records == 0
    pub.on_ack(1000, True, "Success", now + 32.0)
    assert sp.stats.records == 0 and pub.poll(now + 100.0) == []


def test_confirmations_off_settles_on_puback(tmp_path: Path) -> None:
    pub, sp = _pub(tmp_path, max_message_bytes=8192, rate=1e6, inflight=100)
    _fill(sp, 10)
    for t, _ in _send_all(pub, 0.0, 1):
        pub.on_ack(t, True, "Success", 0.0)
    assert sp.stats.records == 0 and sp.stats.unconfirmed == 0


def test_a_refused_acks_subscription_falls_back_to_puback_and_says_so(tmp_path: Path) -> None:
    pub, sp = _pub(tmp_path, max_message_bytes=8192, rate=1e6, inflight=100,
                   confirm_timeout_s=30.0)
    _fill(sp, 20)
    for t, _ in _send_all(pub, 0.0, 1):
        pub.on_ack(t, True, "Success", 0.0)
    assert sp.stats.unconfirmed == 20 and confirming(pub)
    pub.on_subscribed(False, "Not authorized (0x87)")
    assert not confirming(pub) and pub.stats.confirm_refused == 1
    assert sp.stats.records == 0  # confirmations cannot come: the PUBACKs settle them
    _fill(sp, 5)
    for t, _ in _send_all(pub, 1.0, 100):
        pub.on_ack(t, True, "Success", 1.0)
    assert sp.stats.records == 0 and pub.poll(1000.0) == []
    pub.on_subscribed(True, "Granted QoS 1")  # a later connection's subscription granted
    assert confirming(pub)


def test_offline_nothing_is_probed_and_a_reconnect_restarts_the_backoff(tmp_path: Path) -> None:
    """While the link is down nothing is due (nothing could go out, and the confirmations
    the session kept come first after the reconnect); after it, silence is probed from the
    first level again."""
    pub, sp = _pub(tmp_path, max_message_bytes=8192, rate=1e6, inflight=2,
                   confirm_timeout_s=30.0, rng=lambda: 0.0)
    _fill(sp, 10)
    for t, _ in _send_all(pub, 0.0, 1):
        pub.on_ack(t, True, "Success", 0.0)
    outs = pub.poll(31.0)  # silent for the timeout: a probe (2 x 10 reports >= all 10)
    assert len(outs) == 1 and sp.stats.republished == 10
    pub.sent(outs[0], 2000)
    pub.on_ack(2000, True, "Success", 31.5)
    assert sp.stats.unconfirmed == 10
    pub.on_disconnect(40.0, "gone")
    assert pub.poll(500.0) == [] and sp.stats.republished == 10  # offline: nothing due
    assert pub.next_wakeup(500.0) == 1.0
    pub.on_connect(500.0)  # 31.5 + 60 (second round) long past: probed at once
    assert pub.poll(500.0) and sp.stats.republished == 20
