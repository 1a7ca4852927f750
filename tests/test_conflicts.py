"""Conflict resolution during a failover: both sides accept writes, both converge, nothing acknowledged is lost
except what the rule documents as overwritten."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.conflicts import HybridLogicalClock, LwwReplica, Stamp, Versioned, merge
from meridian.online_store import OnlineRow

KEYS = st.sampled_from(["c1", "c2", "c3"])
# Few distinct event times: ties (same event time on both sides) are the interesting case.
EVENT_TIMES = st.integers(min_value=0, max_value=4)


class ManualClock:
    """Wall clocks that drift and stall: the HLC must still order causally."""

    def __init__(self):
        self.ms = 1_000

    def __call__(self) -> int:
        return self.ms


write = st.tuples(
    st.just("write"), st.sampled_from(["primary", "dr"]), KEYS, EVENT_TIMES, st.integers(0, 10**6)
)
ship = st.tuples(
    st.just("ship"),
    st.sampled_from(["primary", "dr"]),
    st.lists(
        st.integers(0, 200), max_size=6
    ),  # which records of the sender's log to deliver (any order, repeats)
)
tick = st.tuples(st.just("tick"), st.sampled_from(["primary", "dr"]), st.integers(-3, 5))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(write, ship, tick), min_size=1, max_size=60))
def test_both_replicas_converge_for_any_interleaving_and_no_acknowledged_write_is_lost(ops):
    clocks = {"primary": ManualClock(), "dr": ManualClock()}
    sides = {name: LwwReplica(name, HybridLogicalClock(clocks[name])) for name in ("primary", "dr")}
    logs: dict[str, list[tuple[str, Versioned]]] = {"primary": [], "dr": []}
    acknowledged: list[tuple[str, Versioned]] = []
    for op in ops:
        if op[0] == "write":
            _, side, key, event_time, value = op
            stamp = sides[side].write(key, value, event_time)
            record = (key, Versioned(value, stamp))
            logs[side].append(record)
            acknowledged.append(record)
        elif op[0] == "ship":  # partial, reordered, duplicated delivery to the other side
            _, sender, picks = op
            receiver = "dr" if sender == "primary" else "primary"
            log = logs[sender]
            if log:
                sides[receiver].receive(log[i % len(log)] for i in picks)
        else:  # wall clocks move (also backwards: NTP steps)
            _, side, delta = op
            clocks[side].ms = max(0, clocks[side].ms + delta)
    # Reconciliation at failback: each side receives everything the other accepted, in any order.
    sides["dr"].receive(reversed(logs["primary"]))
    sides["primary"].receive(logs["dr"])
    assert sides["primary"].state == sides["dr"].state
    # The state is the greatest stamp per key: deterministic, whatever the order above.
    expected: dict[str, Versioned] = {}
    for key, record in acknowledged:
        if key not in expected or record.stamp > expected[key].stamp:
            expected[key] = record
    assert sides["primary"].state == expected
    # Every acknowledged write is either the value held, or overwritten by a greater stamp.
    for key, record in acknowledged:
        held = sides["primary"].state[key]
        assert held == record or held.stamp > record.stamp
    # Stamps are unique: two acknowledged writes never tie, so "greater" is always decided.
    stamps = [r.stamp for _, r in acknowledged]
    assert len(set(stamps)) == len(stamps)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(KEYS, EVENT_TIMES, st.integers(0, 10**9), st.sampled_from(["a", "b"])), max_size=30)
)
def test_merge_is_commutative_associative_and_idempotent(entries):
    records = [{key: Versioned((t, h, r), Stamp(t, h, r))} for key, t, h, r in entries]
    a, b, c = records[0::3], records[1::3], records[2::3]

    def fold(parts):
        state: dict = {}
        for part in parts:
            state = merge(state, part)
        return state

    x, y, z = fold(a), fold(b), fold(c)
    assert merge(x, y) == merge(y, x)
    assert merge(merge(x, y), z) == merge(x, merge(y, z))
    assert merge(x, x) == x


def test_hlc_is_monotonic_and_moves_past_what_it_observes():
    wall = ManualClock()
    clock = HybridLogicalClock(wall)
    first = clock.now()
    wall.ms -= 500  # the wall clock steps back
    second = clock.now()
    assert second > first
    remote = first + (10_000 << 16)
    assert clock.observe(remote) > remote and clock.now() > remote


def test_online_store_rows_of_both_sides_converge_on_either_backend(online_store_pair):
    """The same rule inside the online stores: equal event times are decided by HLC, then site."""
    primary, dr = online_store_pair
    view = "customer_spend"
    shared_time = 1_700_000_000_000_000
    primary.write([OnlineRow(view, "c1", shared_time, "v1", {"x": 1})])
    dr.write([OnlineRow(view, "c1", shared_time, "v1", {"x": 2})])  # later HLC: wins the tie
    dr.write([OnlineRow(view, "c2", shared_time + 5, "v1", {"x": 3})])
    primary.write([OnlineRow(view, "c2", shared_time + 9, "v1", {"x": 4})])  # newer event: wins
    # Same-stamp tie broken by site id: identical (event time, hlc), different origins.
    tie = OnlineRow(view, "c3", shared_time, "v1", {"x": 5}, hlc=42, origin="eu-central")
    primary.write([OnlineRow(view, "c3", shared_time, "v1", {"x": 6}, hlc=42, origin="eu-west")])
    dr.write([tie])
    primary_rows, dr_rows = list(primary.iter_rows(view)), list(dr.iter_rows(view))
    primary.write(dr_rows)
    dr.write(primary_rows)
    final_p = {r.entity: (r.values, r.hlc, r.origin) for r in primary.iter_rows(view)}
    final_d = {r.entity: (r.values, r.hlc, r.origin) for r in dr.iter_rows(view)}
    assert final_p == final_d
    assert final_p["c1"][0] == {"x": 2} and final_p["c2"][0] == {"x": 4}
    assert final_p["c3"][0] == {"x": 6}  # "eu-west" > "eu-central"
    # A second merge changes nothing (idempotent).
    assert primary.write(dr.iter_rows(view)).applied == 0
