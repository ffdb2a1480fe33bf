"""`dlrm-scaling planted`: the planted studies (dlrm_jax/planted.py).

The trained study is slow (minutes on the 2-core VM; docs/BENCHMARKS.md) and runs with
`-m slow`; its answer logic, inputs and report run in the fast suite."""
import json

import numpy as np
import pytest

from analysis.fitting import NO_CONSTANT
from analysis.laws import fit_power_law
from dlrm_jax import planted
from dlrm_jax.cli import main


def _excess_fit(beta, noise=0.0, seed=0):
    n = 2.0 ** np.arange(14, 21)
    rng = np.random.default_rng(seed)
    y = 3.0 * n ** -beta * np.exp(noise * rng.standard_normal(len(n)))
    return fit_power_law(n, y, bootstrap=200, options=NO_CONSTANT)


def test_an_answer_passes_within_the_tolerance_or_its_interval_and_fails_outside():
    fit = _excess_fit(0.40)
    assert fit.beta == pytest.approx(0.40, abs=1e-3)
    assert planted._within("s", "x", 0.38, fit, "").passed            # 0.02 off: inside 0.06
    assert not planted._within("s", "x", 0.47, fit, "").passed        # 0.07 off, the interval is narrow
    wide = _excess_fit(0.40, noise=0.3)
    half = (wide.ci["beta"][1] - wide.ci["beta"][0]) / 2
    a = planted._within("s", "x", wide.beta + 0.9 * max(half, 0.06), wide, "")
    assert a.tolerance == pytest.approx(max(0.06, half)) and a.passed


@pytest.mark.parametrize("argv, message", [
    (["planted", "planted-nothing", "--out", "OUT"],
     "unknown planted study planted-nothing; choose from planted-zipf, planted-triple"),
    (["planted", "--workers", "0", "--out", "OUT"], "--workers must be >= 1, got 0"),
])
def test_bad_planted_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"dlrm-scaling planted: error: {message}"]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.slow
def test_planted_zipf_recovers_both_data_exponents(tmp_path):
    out = tmp_path / "planted"
    code = main(["planted", "planted-zipf", "--out", str(out)])
    results = json.loads((out / "planted.json").read_text())
    answers = {a["name"]: a for a in results["studies"]["planted-zipf"]["answers"]}
    assert code == 0, answers
    assert all(a["pass"] for a in answers.values())
    assert (out / "planted.png").stat().st_size > 10_000 and "planted-zipf" in (out / "planted.md").read_text()
    # ordinary sweep directories: analyze reads them
    assert main(["analyze", str(out / "planted-zipf-1.6"), "--out", str(tmp_path / "report")]) == 0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the trained models do not learn the trilinear term yet (README, "
                                       "'Planted truths'); strict: a fix shows up as XPASS")
def test_planted_triple_shows_the_blind_gap_and_dcn_wins(tmp_path):
    out = tmp_path / "planted"
    main(["planted", "planted-triple", "--out", str(out)])
    study = json.loads((out / "planted.json").read_text())["studies"]["planted-triple"]
    assert all(a["pass"] for a in study["answers"]), study["answers"]
