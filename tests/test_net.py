"""psrec.net: NetConfig parsing (units, errors naming the key/unit) and the alpha-beta transfer time."""
import doctest
import math

import numpy as np
import pytest

import psrec.net
from psrec.net import NetConfig, NetConfigError, parse_bandwidth, parse_duration, parse_net, transfer_time


def test_doctests():
    assert doctest.testmod(psrec.net).failed == 0


def test_parse_issue_example():
    net = parse_net("bandwidth=10Gbit,latency=50us")
    assert net.bandwidth == 10e9 / 8 == 1.25e9  # bytes/s
    assert net.latency == 50e-6
    assert net.link(intra=True) == net.link(intra=False)  # no intra values: same link


@pytest.mark.parametrize("text,bytes_per_s", [
    ("8bit", 1.0), ("8Kbit", 1e3), ("8Mbit", 1e6), ("8Gbit", 1e9), ("10Gbit/s", 1.25e9), ("25Gbps", 3.125e9),
    ("1B", 1.0), ("1KB", 1e3), ("1MB", 1e6), ("1GB", 1e9), ("2GB/s", 2e9), ("1.5GBps", 1.5e9),
    ("100 Mbit", 12.5e6), ("inf", math.inf),
])
def test_bandwidth_units(text, bytes_per_s):
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s, rel=1e-12)


@pytest.mark.parametrize("text,seconds", [("500ns", 5e-7), ("50us", 5e-5), ("2ms", 2e-3), ("1.5s", 1.5), ("0s", 0.0)])
def test_duration_units(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


def test_intra_node_link():
    net = parse_net("bandwidth=10Gbit,latency=50us,intra_bandwidth=100Gbit,intra_latency=2us")
    assert net.link(intra=False) == (1.25e9, 5e-5)
    assert net.link(intra=True) == (12.5e9, 2e-6)


@pytest.mark.parametrize("text,names", [
    ("bandwidth=10Gbit,latencyy=5us", ["latencyy"]),             # unknown key, named
    ("bandwidth=10Gb", ["bandwidth", "'Gb'"]),                   # Gb: bits or bytes? refused
    ("bandwidth=10furlongs", ["bandwidth", "'furlongs'"]),
    ("bandwidth=10", ["bandwidth", "no unit"]),
    ("latency=5", ["latency", "no unit"]),
    ("latency=5m", ["latency", "'m'"]),
    ("latency=-1us", ["latency", ">= 0"]),
    ("bandwidth=0Gbit", ["bandwidth", "> 0"]),
    ("bandwidth", ["key=value"]),
    ("latency=1us,latency=2us", ["latency", "twice"]),
    ("intra_bandwidth=fast", ["intra_bandwidth"]),
])
def test_errors_name_the_key_or_unit(text, names):
    with pytest.raises(NetConfigError) as e:
        parse_net(text)
    for n in names:
        assert n in str(e.value)


def test_post_init_validates():
    with pytest.raises(NetConfigError, match="bandwidth"):
        NetConfig(bandwidth=0)
    with pytest.raises(NetConfigError, match="latency"):
        NetConfig(latency=-1e-6)
    with pytest.raises(NetConfigError, match="intra_latency"):
        NetConfig(intra_latency=math.inf)
    with pytest.raises(NetConfigError, match="bandwidth"):
        NetConfig(bandwidth=True)


def test_from_mapping_numbers_and_strings():
    net = NetConfig.from_mapping({"bandwidth": "25Gbit", "latency": 1e-5, "intra_bandwidth": 1e10})
    assert (net.bandwidth, net.latency, net.intra_bandwidth, net.intra_latency) == (3.125e9, 1e-5, 1e10, None)
    with pytest.raises(NetConfigError, match="cluster.net.speed"):
        NetConfig.from_mapping({"speed": 1}, where="cluster.net")


def test_round_trip_string():
    net = parse_net("bandwidth=25Gbit,latency=50us,intra_bandwidth=200Gbit,intra_latency=500ns")
    assert parse_net(net.to_string()) == net


def test_default_is_no_emulation():
    net = NetConfig()
    assert not net.emulated
    assert transfer_time(net, 1e12, messages=1000) == 0.0
    assert parse_net("latency=1us").emulated


def test_transfer_time_golden():
    net = NetConfig(bandwidth=1e9, latency=1e-4)
    # alpha-beta: 3 messages * 0.1 ms + 5e8 bytes / 1e9 bytes/s = 0.0003 + 0.5
    assert transfer_time(net, 5e8, messages=3) == pytest.approx(0.5003, rel=1e-15)
    assert transfer_time(net, 0, messages=0) == 0.0
    # the intra-node link when asked for
    net2 = NetConfig(bandwidth=1e9, latency=1e-4, intra_bandwidth=1e10, intra_latency=1e-6)
    assert transfer_time(net2, 1e9, 2, intra=True) == pytest.approx(2 * 1e-6 + 1e9 / 1e10)


def test_transfer_time_vectorised_and_checked():
    net = NetConfig(bandwidth=1e6, latency=1e-3)
    t = transfer_time(net, np.array([0.0, 1e6, 2e6]), np.array([1, 1, 2]))
    np.testing.assert_allclose(t, [1e-3, 1.001, 2.002])
    with pytest.raises(ValueError):
        transfer_time(net, -1)
    with pytest.raises(ValueError):
        transfer_time(net, np.array([1.0, -1.0]))
