"""The architecture sweeps' points: every interaction on the compute grid, each knob swept."""
from sweeps import load_sweep
from sweeps.runner import plan


def test_architecture_sweep_is_a_compute_grid_per_interaction(tmp_path):
    points = plan(load_sweep("architecture"), tmp_path, "small", ["train.examples=2**16"])
    assert len(points) == 48 and len({p.name for p in points}) == 48
    by_kind = {}
    for p in points:
        by_kind.setdefault(p.config.model.interaction, []).append(p.config)
    assert set(by_kind) == {"dot", "cat", "dcn", "wukong"}
    for kind, cfgs in by_kind.items():
        assert sorted({c.train.examples for c in cfgs}) == [8192, 16384, 32768, 65536]
        assert sorted({c.model.top_mlp for c in cfgs}) == [(32, 16), (64, 32), (128, 64)]
    assert sorted({c.model.dcn_rank for c in by_kind["dcn"]}) == [27, 54, 108]      # (F+1) D / 8 = 54 at q = 1
    assert sorted({c.model.wukong_mlp for c in by_kind["wukong"]}) == [(32,), (64,), (128,)]


def test_knob_sweeps(tmp_path):
    ranks = [p.config.model.dcn_rank for p in plan(load_sweep("dcn_rank"), tmp_path / "r", "small", [])]
    assert ranks == [13, 27, 54, 108, 216, 0]
    assert [p.config.model.dcn_layers for p in plan(load_sweep("dcn_layers"), tmp_path / "l", "small", [])] == \
        [1, 2, 3, 4, 6]
    w = plan(load_sweep("wukong_layers"), tmp_path / "w", "small", [])
    assert [p.config.model.wukong_layers for p in w] == [1, 2, 3, 4, 6]
    assert {p.config.model.interaction for p in w} == {"wukong"}
