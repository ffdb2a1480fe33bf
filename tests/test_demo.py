"""The demo pipeline (sweeps -> analysis -> summary) at tiny scale."""
import json

from dlrm_jax.demo import demo


def test_demo_pipeline_on_tiny_sweeps(tmp_path):
    lines = []
    code = demo(tmp_path, preset="tiny", log=lines.append, bootstrap=20,
                sweeps={"data": ["train.examples=2**14"], "top_mlp": ["train.examples=2**12"]})
    assert code == 0
    text = "\n".join(lines)
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    data = fits["schemes"]["data"]
    assert data["axis"] == "train_examples" and fits["schemes"]["top_mlp"]["axis"] == "params_dense"
    # NE falls with examples: the fitted exponent is positive and the summary shows it
    assert data["fit"]["params"]["beta"] > 0
    assert "data" in text and "Bayes NE" in text and "held-out" in text
    assert (tmp_path / "report" / "report.md").stat().st_size > 1000
    assert (tmp_path / "report" / "law_data.png").exists()
    # rerunning resumes: nothing is retrained
    again = []
    assert demo(tmp_path, preset="tiny", log=again.append, bootstrap=20,
                sweeps={"data": ["train.examples=2**14"], "top_mlp": ["train.examples=2**12"]}) == 0
    assert "6 already done, 0 to run" in "\n".join(again)
