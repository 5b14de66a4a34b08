"""Emulated links: the spec parser, transfer times and the Shaper's delivery schedule.

Every Shaper test hands `schedule` explicit `now` values: the schedule is a pure
computation, so nothing here sleeps.
"""

import pytest

from swarmpress.swarm.links import LinkError, LinkSpec, Shaper, parse_link


@pytest.mark.parametrize(
    ("spec", "bps", "latency", "jitter"),
    [
        ("100mbit:50ms", 100e6, 0.05, 0.0),
        ("10gbit:1ms:0.2ms", 10e9, 0.001, 0.0002),
        ("500kbit", 500e3, 0.0, 0.0),
        ("1.5mbps:0.2s", 1.5e6, 0.2, 0.0),
        ("1mbit:300us", 1e6, 300e-6, 0.0),
        ("100MBit:50", 100e6, 0.05, 0.0),  # case-insensitive; a bare time is milliseconds
        (" 2gbit : 10ms : 1ms ", 2e9, 0.01, 0.001),
        ("none:20ms", None, 0.02, 0.0),  # unshaped bandwidth, but latency
    ],
)
def test_accepted_forms(spec, bps, latency, jitter):
    link = parse_link(spec)
    if bps is None:
        assert link.bandwidth_bps is None
    else:
        assert link.bandwidth_bps == pytest.approx(bps)
    assert link.latency_s == pytest.approx(latency)
    assert link.jitter_s == pytest.approx(jitter)


@pytest.mark.parametrize("spec", ["none", "off", "unlimited", "LAN", "local"])
def test_unlimited_forms(spec):
    link = parse_link(spec)
    assert link.unlimited
    assert link == LinkSpec()
    assert link.describe() == "unlimited"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("fast", "'fast' is not a bandwidth"),
        ("100mbit:soon", "'soon' is not a time"),
        ("100mbit:50ms:lots", "'lots' is not a time"),
        ("1mbit:1ms:1ms:1ms", "expected BANDWIDTH[:LATENCY[:JITTER]]"),
        ("", "expected BANDWIDTH"),
        (":50ms", "expected BANDWIDTH"),
        ("0mbit:5ms", "bandwidth must be above 0"),
        ("-5mbit", "is not a bandwidth"),
        ("100tbit", "is not a bandwidth"),
        ("100mbit:-5ms", "is not a time"),
    ],
)
def test_rejected_forms_name_the_problem(spec, problem):
    with pytest.raises(LinkError) as info:
        parse_link(spec)
    msg = str(info.value)
    assert problem in msg
    assert repr(spec) in msg


def test_describe_round_trips():
    for spec in ("100mbit:50ms", "10gbit:1ms:0.2ms", "500kbit:0ms"):
        link = parse_link(spec)
        assert parse_link(link.describe()) == link


def test_transfer_seconds():
    link = LinkSpec(bandwidth_bps=8e6, latency_s=0.05)  # 1 MB/s
    assert link.transfer_seconds(1_000_000) == pytest.approx(1.05)
    assert link.transfer_seconds(0) == pytest.approx(0.05)
    assert LinkSpec(latency_s=0.02).transfer_seconds(10**9) == pytest.approx(0.02)
    assert LinkSpec().transfer_seconds(10**9) == 0.0
    assert parse_link("10mbit:20ms").transfer_seconds(125_000) == pytest.approx(0.12)


def test_a_burst_is_delivered_no_faster_than_the_bandwidth():
    spec = LinkSpec(bandwidth_bps=8e6, latency_s=0.05, burst_bytes=10_000)  # 1e6 bytes/s
    rate = spec.bandwidth_bps / 8
    shaper = Shaper(spec)
    now, size, n = 100.0, 25_000, 8
    times = [shaper.schedule("peer", size, now) for _ in range(n)]
    for k, at in enumerate(times, start=1):
        expected = now + (k * size - spec.burst_bytes) / rate + spec.latency_s
        assert at == pytest.approx(expected, abs=1e-9)
    # the whole burst takes as long as the link needs for its bytes beyond the bucket
    assert times[-1] - now >= (n * size - spec.burst_bytes) / rate + spec.latency_s - 1e-9


def test_messages_within_the_burst_only_wait_the_latency():
    spec = LinkSpec(bandwidth_bps=8e6, latency_s=0.01, burst_bytes=65536)
    shaper = Shaper(spec)
    assert shaper.schedule("a", 1000, 5.0) == pytest.approx(5.01)
    assert shaper.schedule("a", 1000, 5.0) == pytest.approx(5.01)


def test_the_bucket_refills_over_time_but_never_beyond_the_burst():
    spec = LinkSpec(bandwidth_bps=8e6, latency_s=0.0, burst_bytes=10_000)
    shaper = Shaper(spec)
    # drain the bucket: 50 kB at t=0 leaves a 40 kB debt, paid off by t=0.04
    assert shaper.schedule("a", 50_000, 0.0) == pytest.approx(0.04)
    # long after, a message within the burst goes at once
    assert shaper.schedule("a", 10_000, 10.0) == pytest.approx(10.0)
    # ... and the next one at the same instant waits: ten idle seconds did not store more
    assert shaper.schedule("a", 10_000, 10.0) == pytest.approx(10.01)


def test_back_to_back_sends_queue_behind_each_other():
    spec = LinkSpec(bandwidth_bps=8e6, latency_s=0.0, burst_bytes=0)
    shaper = Shaper(spec)
    # 0.1 s of data each, sent every 0.05 s: the link is the bottleneck
    times = [shaper.schedule("a", 100_000, 0.05 * i) for i in range(5)]
    assert times == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_the_uplink_is_shared_between_destinations():
    spec = LinkSpec(bandwidth_bps=8e6, latency_s=0.0, burst_bytes=0)
    shaper = Shaper(spec)
    a = shaper.schedule("a", 100_000, 0.0)
    b = shaper.schedule("b", 100_000, 0.0)
    assert (a, b) == pytest.approx((0.1, 0.2))


def test_order_per_destination_is_kept_under_jitter():
    # jitter much larger than the spacing of the sends, so raw delays would reorder
    spec = parse_link("1gbit:5ms:20ms")
    shaper = Shaper(spec, seed=7)
    last: dict[str, float] = {}
    delays = []
    for i in range(400):
        dst = f"p{i % 3}"
        now = i * 0.001
        at = shaper.schedule(dst, 200, now)
        assert at >= now
        assert at >= last.get(dst, 0.0)
        delays.append(at - now)
        last[dst] = at
    # the jitter is real: delays vary by more than the send spacing
    assert max(delays) - min(delays) > 0.01


def test_jitter_is_seeded():
    spec = parse_link("100mbit:20ms:10ms")
    a, b, c = Shaper(spec, seed=1), Shaper(spec, seed=1), Shaper(spec, seed=2)
    ta = [a.schedule(f"d{i}", 100, float(i)) for i in range(20)]
    tb = [b.schedule(f"d{i}", 100, float(i)) for i in range(20)]
    tc = [c.schedule(f"d{i}", 100, float(i)) for i in range(20)]
    assert ta == tb
    assert ta != tc
    for i, t in enumerate(ta):
        assert i + 0.01 - 1e-9 <= t <= i + 0.03 + 1e-9


def test_unlimited_spec_delivers_at_now_plus_latency():
    shaper = Shaper(LinkSpec())
    assert [shaper.schedule("a", 10**9, 3.0) for _ in range(3)] == [3.0, 3.0, 3.0]
    lat = Shaper(LinkSpec(latency_s=0.2))
    assert [lat.schedule("a", 10**9, 3.0 + i) for i in range(3)] == pytest.approx([3.2, 4.2, 5.2])
