"""The framer's output depends on the sample stream only, never on the block cuts."""

from __future__ import annotations

import numpy as np
import pytest

from dsp import Framer, Window

FS = 1000.0


def _feed(framer: Framer, x: np.ndarray, cuts: list[int], t0_ns: int = 0) -> list[Window]:
    out = []
    pos = 0
    for n in cuts:
        out += framer.push(x[:, pos : pos + n], t0_ns + round(pos * 1e9 / FS), FS)
        pos += n
    assert pos == x.shape[1]
    return out


def _random_cuts(rng: np.random.Generator, total: int, max_len: int) -> list[int]:
    cuts = []
    left = total
    while left:
        n = min(left, int(rng.integers(1, max_len + 1)))
        cuts.append(n)
        left -= n
    return cuts


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("size", "hop"), [(64, 32), (64, 64), (100, 7), (16, 1)])
def test_block_sizes_never_change_the_windows(seed: int, size: int, hop: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 1234)).astype(np.float32)
    whole = _feed(Framer(size=size, hop=hop), x, [x.shape[1]])
    split = _feed(Framer(size=size, hop=hop), x, _random_cuts(rng, x.shape[1], 300))
    single = _feed(Framer(size=size, hop=hop), x, [1] * x.shape[1])
    expected_count = (x.shape[1] - size) // hop + 1
    assert len(whole) == expected_count, f"seed={seed}"
    for a, b, c in zip(whole, split, single, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples, err_msg=f"seed={seed}")
        np.testing.assert_array_equal(a.samples, c.samples, err_msg=f"seed={seed}")
        assert a.t0_ns == b.t0_ns == c.t0_ns
    for k, w in enumerate(whole):
        np.testing.assert_array_equal(w.samples, x[:, k * hop : k * hop + size])
        assert w.t0_ns == round(k * hop * 1e9 / FS)
    assert [w.after_restart for w in whole] == [True] + [False] * (len(whole) - 1)


def test_a_gap_restarts_framing_instead_of_splicing() -> None:
    f = Framer(size=100, hop=100)
    x = np.arange(400, dtype=np.float32)[None, :]
    assert f.push(x[:, :150], 0, FS)[0].t0_ns == 0
    # Samples 150..199 went missing: the partial window (100..149) must not be spliced.
    assert f.push(x[:, 200:260], round(200 * 1e9 / FS), FS) == []
    assert f.stats.restarts == 1 and f.stats.discarded == 50
    out = f.push(x[:, 260:400], round(260 * 1e9 / FS), FS)
    assert [w.after_restart for w in out] == [True, False]
    assert [w.t0_ns for w in out] == [round(200 * 1e9 / FS), round(300 * 1e9 / FS)]
    np.testing.assert_array_equal(out[0].samples, x[:, 200:300])


def test_a_sample_rate_change_restarts_framing() -> None:
    f = Framer(size=10, hop=10)
    f.push(np.zeros((1, 5), np.float32), 0, FS)
    f.push(np.zeros((1, 5), np.float32), 5_000_000, 2 * FS)
    assert f.stats.restarts == 1


def test_small_timestamp_jitter_is_not_a_gap() -> None:
    f = Framer(size=10, hop=10)
    f.push(np.zeros((1, 5), np.float32), 0, FS)
    f.push(np.zeros((1, 5), np.float32), 5_000_000 + 400_000, FS)  # 0.4 sample late
    assert f.stats.restarts == 0


@pytest.mark.parametrize(("size", "hop"), [(0, 1), (10, 0), (10, 11)])
def test_bad_framer_settings_name_the_value(size: int, hop: int) -> None:
    with pytest.raises(ValueError, match=r"size|hop"):
        Framer(size=size, hop=hop)
