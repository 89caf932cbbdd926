"""The sans-IO batcher: size, delay and byte limits per target; splitting never changes batches."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.consumer.batcher import INVOKE_MAX_BYTES, Batch, Batcher, Target

A = Target("ep", "bundle-a")
B = Target("ep", "bundle-b")


@dataclass(frozen=True)
class Item:
    key: int
    target: Target
    nbytes: int


def summary(batches: list[Batch[Item]]) -> list[tuple[str, list[int], str]]:
    return [(str(b.target), [i.key for i in b.items], b.reason) for b in batches]


def test_flushes_at_max_size_per_target() -> None:
    b: Batcher[Item] = Batcher(max_size=3, max_delay=1.0, max_bytes=10_000, overhead=10)
    out = []
    for k in range(7):
        out += b.add(Item(k, A if k % 2 == 0 else B, 100), now=0.0)
    # A gets 0,2,4,6 -> [0,2,4] full; B gets 1,3,5 -> full
    assert summary(out) == [("ep/bundle-a", [0, 2, 4], "size"), ("ep/bundle-b", [1, 3, 5], "size")]
    assert len(b) == 1
    assert summary(b.flush()) == [("ep/bundle-a", [6], "flush")]
    assert len(b) == 0


def test_flushes_at_max_delay_via_due_and_add() -> None:
    b: Batcher[Item] = Batcher(max_size=100, max_delay=0.05, max_bytes=10_000, overhead=10)
    assert b.next_deadline() is None
    assert b.add(Item(0, A, 10), now=1.0) == []
    assert b.next_deadline() == pytest.approx(1.05)
    assert b.due(1.049) == []
    assert summary(b.due(1.05)) == [("ep/bundle-a", [0], "delay")]
    # add() emits an overdue batch itself even if the timer never fired
    b.add(Item(1, A, 10), now=2.0)
    out = b.add(Item(2, A, 10), now=2.2)
    assert summary(out) == [("ep/bundle-a", [1], "delay")]
    assert summary(b.flush()) == [("ep/bundle-a", [2], "flush")]


def test_flushes_before_exceeding_max_bytes() -> None:
    b: Batcher[Item] = Batcher(max_size=100, max_delay=1.0, max_bytes=1000, overhead=100)
    out = b.add(Item(0, A, 400), 0.0) + b.add(Item(1, A, 400), 0.0)
    assert out == []
    out = b.add(Item(2, A, 400), 0.0)  # 100 + 1200 > 1000: the open batch goes first
    assert summary(out) == [("ep/bundle-a", [0, 1], "bytes")]
    assert out[0].nbytes == 900
    out = b.add(Item(3, A, 500), 0.0)  # exactly 1000: emitted at once
    assert summary(out) == [("ep/bundle-a", [2, 3], "bytes")]


def test_rejects_an_item_that_can_never_fit() -> None:
    b: Batcher[Item] = Batcher(max_size=10, max_delay=1.0, max_bytes=1000, overhead=100)
    with pytest.raises(ValueError, match="can never fit"):
        b.add(Item(0, A, 901), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_delay": -1.0}, "max_delay"),
        ({"max_bytes": INVOKE_MAX_BYTES + 1}, "max_bytes"),
    ],
)
def test_validates_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Batcher(**kwargs)  # type: ignore[arg-type]


def test_stats_count_batches_by_reason() -> None:
    b: Batcher[Item] = Batcher(max_size=2, max_delay=0.01, max_bytes=10_000, overhead=10)
    b.add_many([Item(k, A, 10) for k in range(5)], 0.0)
    b.due(1.0)
    assert b.stats.items == 5
    assert b.stats.by_reason == {"size": 2, "bytes": 0, "delay": 1, "flush": 0}
    assert b.stats.batches == 3


events = st.lists(
    st.tuples(
        st.sampled_from([A, B, Target("other")]),
        st.integers(min_value=1, max_value=600),  # bytes
        st.floats(min_value=0.0, max_value=0.03),  # time step
        st.booleans(),  # call due() before this item?
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(events=events, split=st.integers(min_value=1, max_value=20))
def test_chunking_never_changes_the_batches(
    events: list[tuple[Target, int, float, bool]], split: int
) -> None:
    """Same items and times -> same batch contents, however the calls are split or timed."""

    def make() -> Batcher[Item]:
        return Batcher(max_size=7, max_delay=0.05, max_bytes=2000, overhead=50)

    items = []
    now = 0.0
    for k, (target, size, step, _) in enumerate(events):
        now += step
        items.append((Item(k, target, size), now))

    # 1: one at a time, no timer at all
    one = make()
    got_one: list[Batch[Item]] = []
    for item, t in items:
        got_one += one.add(item, t)
    # 2: in groups sharing a time stamp; the timer fires at arbitrary points
    two = make()
    got_two: list[Batch[Item]] = []
    for start in range(0, len(items), split):
        group = items[start : start + split]
        for (item, t), (_, _, _, tick) in zip(group, events[start : start + split], strict=True):
            if tick:
                got_two += two.due(t)
            got_two += two.add(item, t)
    # Contents are identical; only *when* a delay batch comes out may differ, so compare
    # the multiset of batch contents after flushing both.
    got_one += one.flush()
    got_two += two.flush()

    def contents(batches: list[Batch[Item]]) -> list[tuple[str, tuple[int, ...]]]:
        return sorted((str(b.target), tuple(i.key for i in b.items)) for b in batches)

    assert contents(got_one) == contents(got_two)
    assert sorted(i.key for b in got_one for i in b.items) == list(range(len(items)))
    for batch in got_one:
        assert len(batch) <= 7
        assert batch.nbytes <= 2000
        assert batch.items[-1].key >= batch.items[0].key
