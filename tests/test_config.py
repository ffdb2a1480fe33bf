import json

import pytest

from dlrm_jax import config as C
from dlrm_jax.errors import UserError


def test_presets_have_the_published_shapes():
    k = C.load_config("criteo-kaggle")
    assert k.model.embed_dim == 16 and k.model.bottom_mlp == (512, 256, 64) and k.model.top_mlp == (512, 256)
    assert k.synthetic.cardinalities == C.KAGGLE_TABLE_ROWS and len(C.KAGGLE_TABLE_ROWS) == 26
    from dlrm_jax.data.hashing import table_rows_for
    assert table_rows_for(k.model.table_rows, C.KAGGLE_TABLE_ROWS) == C.KAGGLE_TABLE_ROWS
    m = C.load_config("criteo-mlperf")
    assert m.model.embed_dim == 128 and m.model.bottom_mlp == (512, 256)
    assert m.model.top_mlp == (1024, 1024, 512, 256) and m.model.table_rows == 40_000_000


def test_overrides_parse_types_and_lists():
    cfg = C.load_config("tiny", ["model.top_mlp=512,256", "train.examples=2**16", "train.learning_rate=1e-2",
                                 "model.table_rows=1000", "data.source=synthetic", "seed=3"])
    assert cfg.model.top_mlp == (512, 256)
    assert cfg.train.examples == 65536 and cfg.train.learning_rate == 0.01 and cfg.seed == 3
    assert cfg.model.table_rows == 1000
    rows = ",".join(["7"] * 26)
    assert C.load_config(None, [f"model.table_rows={rows}"]).model.table_rows == (7,) * 26


def test_round_trip_through_json():
    cfg = C.load_config("criteo-kaggle", ["seed=5"])
    again = C.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("override, message", [
    ("train.exampels=5", "unknown config key 'train.exampels' (did you mean 'train.examples'?)"),
    ("train.examples=-5", "train.examples must be positive, got -5"),
    ("train.examples=abc", "bad value for train.examples: 'abc' is not an int"),
    ("train.batch_size=4096", "train.batch_size (4096) is larger than the training examples (1024)"),
    ("model.interaction=sum", "model.interaction must be dot, cat, dcn or wukong, got 'sum'"),
    ("model.table_rows=1,2,3", "model.table_rows needs 26 entries (or one cap), got 3"),
    ("nonsense", "--set expects key=value, got 'nonsense'"),
    ("train.eval_every_examples=2**-1", "bad value for train.eval_every_examples: '2**-1' is not an int"),
    ("embedding.eps=-1", "embedding.eps must be >= 0, got -1.0"),
    ("synthetic.seed=-1", "synthetic.seed must be in [0, 2**31), got -1"),
    ("train.epochs=2", "with train.epochs > 1, train.examples (16384) must be a multiple of train.batch_size (3000) "
                       "so every epoch holds the same examples"),
])
def test_bad_overrides_raise_one_clear_line(override, message):
    base = (["train.examples=1024"] if "batch_size" in override
            else ["train.batch_size=3000"] if "epochs" in override else [])
    with pytest.raises(UserError) as err:
        C.load_config("tiny", base + [override])
    assert str(err.value) == message


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        C.load_config("huge")
