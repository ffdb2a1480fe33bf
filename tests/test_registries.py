"""Names that several parts rely on come from one registry each."""
import sweeps
from analysis.results import RESOURCE_AXES
from dlrm_jax.cli import _parser


def test_every_sweep_has_a_resource_axis_and_only_sweeps_do():
    assert "runner" not in sweeps.NAMES and "data" in sweeps.NAMES
    assert set(sweeps.NAMES) == set(RESOURCE_AXES), "add the sweep's x axis to analysis.results.RESOURCE_AXES"


def test_cli_help_lists_every_sweep_and_preset():
    from dlrm_jax.config import PRESETS
    help_text = _parser().format_help() + "".join(
        a.format_help() for a in _parser()._subparsers._group_actions[0].choices.values())
    for name in (*sweeps.NAMES, *PRESETS):
        assert name in help_text, name
