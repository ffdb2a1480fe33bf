"""`dlrm-scaling compile`: the train step compiled ahead of time, on fake CPU devices and TPU slices.

The TPU test needs libtpu (`pip install -e '.[tpu]'`) and skips without it;
the default test install does not bring it (a 213 MB wheel; see README
"Before you rent a TPU").
"""
import importlib.util
import json

import pytest

from dlrm_jax.cli import main
from dlrm_jax.compile import hlo_collectives, report as compile_report, topologies as tpu_topologies
from dlrm_jax.errors import UserError

TINY_ROW = ["--preset", "tiny", "--set", "embedding.sharding=row"]


def test_topology_names_map_to_libtpu_slices():
    assert tpu_topologies.parse("v5p-128")[2:5] == ("v5p:4x4x4", "megacore", 64)
    assert tpu_topologies.parse("v5e-16")[2:5] == ("v5e:4x4", "default", 16)
    assert tpu_topologies.parse("v6e-256").topology == "v6e:16x16"
    assert tpu_topologies.parse("v4-8").topology == "v4:2x2x1"
    assert tpu_topologies.parse("tpu7x-8").topology == "tpu7x:2x2x1"
    assert tpu_topologies.parse("v5e-16", slices=2).slices == 2
    for bad in ("v5e-12", "v5p-7", "v9-8", "v5e"):
        with pytest.raises(UserError, match="unknown TPU topology .*accepted: .*v5p-128.*v5e-16.*tpu7x-8"):
            tpu_topologies.parse(bad)


def test_cli_refuses_an_unknown_topology_with_the_list(capsys):
    assert main(["compile", *TINY_ROW, "--topology", "v5e-16,v5e-12"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown TPU topology 'v5e-12'" in err and "v6e-256" in err


def test_replica_groups_spanning_slices_are_cross_slice():
    hlo = ("%a = f32[64]{0} all-reduce(f32[64]{0} %x), replica_groups={{0,1},{2,3}}, to_apply=%add\n"
           "%b = f32[32]{0} all-reduce(f32[32]{0} %y), replica_groups=[2,2]<=[2,2]T(1,0), to_apply=%add\n"
           "%c = (f32[8]{0}, f32[16]{0}) all-gather-start(f32[8]{0} %z), replica_groups={{0,1}}, dimensions={0}\n"
           "%d = f32[16]{0} all-gather-done((f32[8]{0}, f32[16]{0}) %c)\n"
           # libtpu's multi-slice lowering: the DCN part as a megascale host transfer
           '%s = (s32[8,208,1]{1,2,0:T(1,128)}, u32[], token[]) send(%a2a, %t), channel_id=5, '
           'is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",'
           '_xla_host_transfer_rendezvous="all_to_all.39_0"}\n'
           '%r = (s32[8,208,1]{1,2,0}, u32[], token[]) recv(%t), channel_id=6, is_host_transfer=true\n')
    by = hlo_collectives.bytes_by_kind(hlo, slice_of=lambda d: d // 2)   # devices 0,1: slice 0; 2,3: slice 1
    assert by["within_slice"] == {"all-reduce": 256, "all-gather": 64}  # the start/done pair once, its result
    assert by["cross_slice"] == {"all-reduce": 128, "all-to-all": 8 * 208 * 4}  # groups {0,2}, {1,3}; the send


def test_compile_on_fake_devices_reports_per_device(tmp_path, capfd):
    # The tests' JAX runs 8 devices, so --devices 4 re-runs the command in a fresh process.
    hlo = tmp_path / "step.hlo"
    assert main(["compile", *TINY_ROW, "--devices", "4", "--json", "--hlo-out", str(hlo)]) == 0
    r = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert r["devices"] == 4 and r["platform"] == "cpu" and r["per_device_batch"] == 64 and r["fits"]
    assert r["memory"]["argument"] > 0 and r["memory"]["peak"] >= r["memory"]["temp"]
    assert set(r["collectives"]) == {"all-to-all", "all-reduce"}
    assert r["collectives"]["all-to-all"] > 0 and r["collective_bytes"] <= 2 * r["owner_routed_bound_bytes"]
    assert r["flops_analytic"] > 0 and 0.5 < r["flops_xla"] / r["flops_analytic"] < 2.0
    assert r["compile_s"] > 0 and "all-to-all" in hlo.read_text()


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu absent: pip install -e '.[tpu]'")
def test_tpu_slice_compiles_and_a_model_too_large_does_not_fit():
    from dlrm_jax.config import load_config
    s = tpu_topologies.parse("v5e-4")
    devices = tpu_topologies.devices(s)
    assert len(devices) == 4
    # 4 tables of 20M rows x 64 (+ row-wise state): ~20.5 GB over four 16 GiB chips fits ...
    cfg = load_config("tiny", ["embedding.sharding=row", "model.embed_dim=64", "model.bottom_mlp=64",
                               "synthetic.cardinalities=" + ",".join(["20000000"] * 4 + ["10"] * 22)])
    r = compile_report.compile_report(cfg, devices, target=s)
    assert r["fits"] and r["platform"] == "tpu" and r["memory"]["argument"] > r["table_bytes"] / 4
    assert set(r["collectives"]) <= {"all-to-all", "all-reduce"}
    e = r["estimate"]                     # the chip's published figures: compute, memory and collective parts
    assert e["available"] and min(e["compute_s"], e["memory_s"], e["collective_s"]) > 0
    assert e["step_s_low"] <= e["step_s_high"] and "ESTIMATE" in compile_report.format_report(r)
    # ... four times as many rows (~82 GB) do not: an answer with the numbers, not a crash.
    big = cfg.replace(**{"synthetic.cardinalities": (80_000_000,) * 4 + (10,) * 22})
    r = compile_report.compile_report(big, devices, target=s)
    assert not r["fits"] and r["bytes_needed"] > r["device_memory_bytes"] == 16 * 2 ** 30
    assert "does not fit" in compile_report.format_report(r)


def test_peak_memory_is_the_one_formula():
    # bench and compile report one peak: arguments + outputs - donated + temporaries + code.
    from types import SimpleNamespace

    from dlrm_jax import bench
    from dlrm_jax.compile import memory
    sizes = dict(argument=1000, output=300, alias=200, temp=50, generated_code=7)
    compiled = SimpleNamespace(memory_analysis=lambda: SimpleNamespace(
        **{f"{k}_size_in_bytes": v for k, v in sizes.items()}))
    got = memory.memory_per_device(compiled)
    assert got == {**sizes, "peak": 1000 + 300 - 200 + 50 + 7}
    assert bench.memory_per_device is memory.memory_per_device
    assert memory.memory_per_device(SimpleNamespace(memory_analysis=lambda: None)) == {}
