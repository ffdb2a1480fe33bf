"""The step-time estimate against the same formulas worked by hand (dlrm_jax/compile/estimate.py)."""
import pytest

from dlrm_jax.compile import topologies
from dlrm_jax.compile.estimate import estimate


def _v5p_128(**kw):
    s = topologies.parse("v5p-128")                       # 64 chips, v5p:4x4x4, one device a chip
    args = dict(generation=s.generation, topology=s.topology, devices=64, devices_per_chip=s.devices_per_chip,
                global_batch=65536, flops=100.25e9, bytes_accessed=50e9,
                collectives={"all-to-all": 410e6, "all-reduce": 66.8e6})
    return estimate(**{**args, **kw})


def test_v5p_128_by_hand():
    e = _v5p_128()
    assert e["available"] and e["estimate"] is True
    assert e["compute_s"] == pytest.approx(100.25e9 / 459e12)
    assert e["memory_s"] == pytest.approx(50e9 / 2765e9)
    # all-reduce: a ring sends ~2 (n-1)/n of the array over the chip's 1200 GB/s
    assert e["collective_s_by_kind"]["all-reduce"] == pytest.approx(2 * 63 / 64 * 66.8e6 / 1200e9)
    # all-to-all: the bisection bounds it: half of 64 x 410 MB crosses 2 x 16 links of 1200/6 GB/s
    assert e["collective_s_by_kind"]["all-to-all"] == pytest.approx(64 * 410e6 / 2 / (32 * 200e9))
    parts = (e["compute_s"], e["memory_s"], e["collective_s"])
    assert e["step_s_low"] == pytest.approx(max(parts)) and e["step_s_high"] == pytest.approx(sum(parts))
    assert e["examples_per_s_per_chip"] == pytest.approx(1024 / e["step_s_high"])
    assert e["examples_per_s_per_chip_best"] == pytest.approx(1024 / e["step_s_low"])
    assert e["examples_per_s"] == pytest.approx(64 * e["examples_per_s_per_chip"])


def test_fewer_collective_bytes_give_a_shorter_step_and_cross_slice_goes_over_the_dcn():
    base, half = _v5p_128(), _v5p_128(collectives={"all-to-all": 205e6, "all-reduce": 33.4e6})
    assert half["collective_s"] == pytest.approx(base["collective_s"] / 2)
    cross = _v5p_128(cross_slice={"all-reduce": 10e6})
    assert cross["collective_s_by_kind"]["all-reduce (cross-slice)"] == pytest.approx(10e6 / (50e9 / 8))


def test_missing_figures_are_named_not_guessed():
    e = _v5p_128(flops=None)
    assert not e["available"] and "XLA's FLOPs" in e["why"]
    s = topologies.parse("v6e-256")
    e = estimate(generation=s.generation, topology=s.topology, devices=256, devices_per_chip=1, global_batch=65536,
                 flops=1e9, bytes_accessed=1e9, collectives={"all-to-all": 1e6}, cross_slice={"all-to-all": 1e6})
    assert not e["available"] and "DCN bandwidth" in e["why"]
    s = topologies.parse("tpu7x-8")
    e = estimate(generation=s.generation, topology=s.topology, devices=8, devices_per_chip=2, global_batch=1024,
                 flops=1e9, bytes_accessed=1e9, collectives={})
    assert not e["available"] and "peak FLOP/s" in e["why"]
