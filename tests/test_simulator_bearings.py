"""Bearing table and defect orders."""

from __future__ import annotations

import pytest

from simulator.bearings import BearingGeometry, UnknownBearingError, lookup_bearing


def test_6205_orders_match_reference() -> None:
    o = lookup_bearing("6205").defect_orders()
    assert o["bpfi"] == pytest.approx(5.4152, rel=1e-4)
    assert o["bpfo"] == pytest.approx(3.5848, rel=1e-4)
    assert o["ftf"] == pytest.approx(0.39828, rel=1e-4)
    assert 2 * o["bsf"] == pytest.approx(4.7135, rel=1e-4)


@pytest.mark.parametrize("des", ["6205", "6206", "6305", "6308", "6310", "6205-2RS", "6308 ZZ/C3"])
def test_common_designations_known(des: str) -> None:
    g = lookup_bearing(des)
    o = g.defect_orders()
    assert o["bpfi"] > o["bpfo"] > o["bsf"] > o["ftf"] > 0
    assert o["bpfo"] + o["bpfi"] == pytest.approx(g.n_balls)


def test_unknown_designation_names_it_and_the_known_ones() -> None:
    with pytest.raises(UnknownBearingError) as err:
        lookup_bearing("9999")
    assert isinstance(err.value, KeyError)
    assert "9999" in str(err.value)
    assert "6205" in str(err.value)


def test_bad_geometry_rejected() -> None:
    with pytest.raises(ValueError, match="pitch_d_mm"):
        BearingGeometry(None, 9, 40.0, 39.0)


def test_defect_frequencies_hz() -> None:
    f = lookup_bearing("6205").defect_frequencies_hz(1796)
    assert f["bpfo"] == pytest.approx(107.3, abs=0.1)
