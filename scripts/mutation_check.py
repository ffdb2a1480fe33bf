#!/usr/bin/env python3
"""Do the fast tests catch the bugs they are there for?  Put one small, realistic bug
into the code at a time, run the test that owns the claim it breaks, restore the file.

    python scripts/mutation_check.py              # every mutation (~7 min on the 2-core VM)
    python scripts/mutation_check.py -k locate    # mutations whose name contains 'locate'
    python scripts/mutation_check.py --list       # what each one attacks, and its tests

Each mutation is data (MUTATIONS below): a file, an exact snippet of it (which must
occur exactly once), its replacement, the claim it attacks, and the fast test(s) that
must catch it.  Every named test is run on its own (`pytest -x -q -p no:cacheprovider
NODE`) with the mutation in place: "caught" when it fails, "MISSED" when it passes.
The file is restored after each mutation, byte for byte and with its modification
time, also on Ctrl-C or SIGTERM.  First, all named tests run once on the unmutated
code (skip with --no-baseline): a test that already fails would catch everything.

Exit status: 0 when every mutation is caught by every test named for it; 1 when one
is missed (or a test errors or times out); 2 when a snippet is not found exactly once
(the code moved or changed: update that entry) or the baseline fails.

Not part of CI.  When the code a claim lives in changes (the sharded exchange, new
interactions), add or update the entries here with it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mutations_gcs  # scripts/: this file's directory is on sys.path when it runs

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str                  # relative to the repository root
    original: str              # exact text, must occur exactly once in the file
    replacement: str
    claim: str                 # what the bug breaks
    tests: tuple[str, ...]     # pytest node ids that must fail with the bug in place


MUTATIONS = [
    # -- from the mutation review in issue 15 ---------------------------------------
    # Contiguous groups (embedding.sharding=table) hold whole tables per block, so no id
    # of a train step can cross a block; the carry only matters for a table spanning
    # blocks, which the int64 divmod test checks directly.
    Mutation("locate-carry-off-by-one", "dlrm_jax/embedding/sharded.py",
             "carry = (x >= s).astype(jnp.int32)", "carry = (x > s).astype(jnp.int32)",
             "contiguous blocks: an id landing exactly on a block's first row",
             ("tests/embedding/test_sharding.py::test_ids_of_tables_beyond_int32_are_located_exactly",)),
    Mutation("locate-carry-removed", "dlrm_jax/embedding/sharded.py",
             "carry = (x >= s).astype(jnp.int32)", "carry = jnp.zeros_like(x)",
             "contiguous blocks: ids whose row crosses into the next block",
             ("tests/embedding/test_sharding.py::test_ids_of_tables_beyond_int32_are_located_exactly",)),
    # Interleaved groups (row, auto: row r on device r % M) are what a train step uses.
    Mutation("locate-interleaved-carry-removed", "dlrm_jax/embedding/sharded.py",
             "carry = (x >= m).astype(jnp.int32)", "carry = jnp.zeros_like(x)",
             "sharded == single device: interleaved rows whose offset wraps past the last device",
             ("tests/embedding/test_sharding.py::test_sharded_step_matches_single_device",)),
    Mutation("locate-interleaved-carry-off-by-one", "dlrm_jax/embedding/sharded.py",
             "carry = (x >= m).astype(jnp.int32)", "carry = (x > m).astype(jnp.int32)",
             "sharded == single device: an interleaved row landing exactly on device 0 after a wrap",
             ("tests/embedding/test_sharding.py::test_sharded_step_matches_single_device",)),
    Mutation("interval-min-max", "analysis/bootstrap.py",
             '    lo, hi = np.quantile(samples, q, axis=axis, method="inverted_cdf") if np.isinf(samples).any() \\\n'
             '        else np.quantile(samples, q, axis=axis)\n',
             "    lo, hi = samples.min(axis=axis), samples.max(axis=axis)\n",
             "bootstrap intervals are the percentiles of the refits, not their range",
             ("tests/analysis/test_intervals.py::test_reported_interval_is_the_percentile_interval_of_the_refits",)),
    Mutation("interval-level-ignored-by-fit", "analysis/laws.py",
             "self.ci = self.intervals(level)", "self.ci = self.intervals(0.95)",
             "a fit reports intervals at the level it was asked for",
             ("tests/analysis/test_intervals.py::test_reported_interval_is_the_percentile_interval_of_the_refits",
              "tests/analysis/test_intervals.py::test_a_narrower_level_lies_strictly_inside")),
    Mutation("interval-level-ignored-by-percentiles", "analysis/bootstrap.py",
             "q = [(1 - level) / 2, 1 - (1 - level) / 2]", "q = [0.025, 0.975]",
             "percentile intervals (parameters and predictions) follow `level`",
             ("tests/analysis/test_intervals.py::test_reported_interval_is_the_percentile_interval_of_the_refits",
              "tests/analysis/test_intervals.py::test_a_narrower_level_lies_strictly_inside")),
    Mutation("bootstrap-multiplicities-ignored", "analysis/bootstrap.py",
             "weights=w[keep].astype(float)", "weights=np.ones(len(keep))",
             "a run drawn k times into a resample counts k times in its refit",
             ("tests/analysis/test_intervals.py::test_bootstrap_refits_count_each_run_as_often_as_drawn",)),
    Mutation("flops-interaction-triangle", "dlrm_jax/model/interactions/dot.py",
             "return 0, 2 * (num_sparse + 1) ** 2 * model_cfg.embed_dim",
             "return 0, (num_sparse + 1) * num_sparse * model_cfg.embed_dim",
             "analytic training FLOPs == XLA's count (dot: the full (F+1)^2 square, -1.24%)",
             ("tests/model/test_accounting.py::test_training_flops_match_xla_cost_analysis",)),
    # -- more claims of the fast suite ----------------------------------------------
    Mutation("adagrad-accumulator-not-accumulated", "dlrm_jax/embedding/optimizers.py",
             "acc = acc + (jnp.mean(g * g, axis=-1) if rowwise else g * g)",
             "acc = jnp.mean(g * g, axis=-1) if rowwise else g * g",
             "sparse Adagrad / row-wise Adagrad == optax on the full table, over several steps",
             ("tests/embedding/test_embedding.py::test_sparse_update_equals_dense_reference",)),
    Mutation("initial-accumulator-ignored", "dlrm_jax/embedding/tables.py",
             "layout.dim), initial_accumulator, jnp.float32)", "layout.dim), 0.0, jnp.float32)",
             "embedding.initial_accumulator starts the sparse Adagrad state as optax's does",
             ("tests/embedding/test_embedding.py::test_sparse_update_equals_dense_reference",)),
    Mutation("first-position-dedup-drops-duplicates", "dlrm_jax/embedding/optimizers.py",
             "summed = jnp.zeros_like(g).at[jnp.where(valid, slot, n)]",
             "summed = jnp.zeros_like(g).at[jnp.where(valid, position, n)]",
             "duplicate ids' gradients are summed into one row update (first-position path)",
             ("tests/embedding/test_embedding.py::test_sparse_update_equals_dense_reference",)),
    Mutation("first-position-dedup-keeps-other-shards", "dlrm_jax/embedding/optimizers.py",
             "valid = flat < num_rows", "valid = flat <= num_rows",
             "ids owned by another shard add nothing to this shard's rows",
             # The exchange sends an owner only its own ids (padding carries zero
             # gradients), so a sharded step cannot show this; the unit test can.
             ("tests/embedding/test_embedding.py::test_row_start_drops_ids_of_other_shards",)),
    Mutation("synthetic-host-slice", "dlrm_jax/data/synthetic.py",
             "first = lo + host_index * per_host", "first = lo + host_index",
             "each host reads its contiguous slice of the global batch (synthetic)",
             ("tests/data/test_synthetic.py::test_example_is_a_pure_function_of_seed_and_index",)),
    Mutation("criteo-host-slice-floor", "dlrm_jax/data/criteo/source.py",
             "hi = b0 + (host_index + 1) * size // host_count",
             "hi = b0 + (host_index + 1) * (size // host_count)",
             "the hosts' slices of a short last batch add up to it (Criteo)",
             ("tests/data/criteo/test_source.py::test_hosts_read_contiguous_slices_of_the_global_batch",)),
    Mutation("synthetic-eval-ids-from-training", "dlrm_jax/data/synthetic.py",
             'u = hash_uniform(self._keys["ids"], row[:, None], self._col_key)',
             'u = hash_uniform(self._keys["ids"], (row - _U64(stream))[:, None], self._col_key)',
             "no eval example shares its ids with a training example",
             ("tests/data/test_synthetic.py::test_eval_stream_is_disjoint_from_training",)),
    Mutation("holdout-smallest-scales", "analysis/validation.py",
             "held = scale >= distinct[-k]", "held = scale <= distinct[k - 1]",
             "the held-out check extrapolates to the largest scales",
             ("tests/analysis/test_study.py::test_holdout_on_a_good_law",)),
    Mutation("objective-sqrt-weights", "analysis/objective.py",
             "        loss = loss * weights\n        psi = psi * weights\n",
             "        loss = loss * np.sqrt(weights)\n        psi = psi * np.sqrt(weights)\n",
             "a weight in the fit equals repeating the point",
             ("tests/analysis/test_intervals.py::test_a_weight_equals_repeating_the_point",)),
    Mutation("criteo-kaggle-dlrm-last-day-floor", "dlrm_jax/data/criteo/splits.py",
             "test_end = train_end + (days[-1] + 1) // 2", "test_end = train_end + days[-1] // 2",
             "kaggle-dlrm splits the last day as np.array_split does (test gets the odd line)",
             ("tests/data/criteo/test_splits.py::test_kaggle_dlrm_matches_reference",)),
    # -- the owner-routed exchange (pod scale) and the new interactions -------------
    Mutation("exchange-stops-after-one-round", "dlrm_jax/embedding/exchange.py",
             "return r + 1, hi, carry, overflow, left > 0", "return r + 1, hi, carry, overflow, left < 0",
             "ids that overflow the all-to-all capacity are sent in later rounds, never dropped",
             ("tests/embedding/test_exchange.py::test_exchange_equals_a_gather_and_the_single_device_update",
              "tests/embedding/test_exchange.py::test_train_steps_with_skew_and_overflow_match_single_device")),
    Mutation("exchange-window-off-by-one", "dlrm_jax/embedding/exchange.py",
             "send = valid & (rt.row >= lo[o]) & (rt.row < hi[o])",
             "send = valid & (rt.row >= lo[o]) & (rt.row <= hi[o])",
             "each row reaches its owner in exactly one round (Adagrad stays exact)",
             ("tests/embedding/test_exchange.py::test_exchange_equals_a_gather_and_the_single_device_update",)),
    Mutation("dcn-residual-dropped", "dlrm_jax/model/interactions/dcn.py",
             "x = x0 * xw + x", "x = x0 * xw",
             "the cross net is DCNv2's x0 * (W x + b) + x",
             ("tests/model/test_interactions.py::test_cross_net_equals_the_dcn_v2_formula",)),
    Mutation("wukong-lcb-transposed", "dlrm_jax/model/interactions/wukong.py",
             'lcb = jnp.einsum("ln,bnd->bld", w_l, x)', 'lcb = jnp.einsum("ln,bnd->bld", w_l, x[:, ::-1])',
             "Wukong's linear compression block is W_L X",
             ("tests/model/test_interactions.py::test_wukong_layer_equals_the_papers_equations",)),
    # -- an architecture is one unit: the interaction registry (issue 21) ------------
    Mutation("registry-dcn-width-wrong", "dlrm_jax/model/interactions/dcn.py",
             "    return (num_sparse + 1) * model_cfg.embed_dim\n", "    return num_sparse * model_cfg.embed_dim\n",
             "an interaction's registered width is its output width, which the accounting's over arch takes",
             ("tests/model/test_interactions.py::test_dlrm_forward_shapes_and_over_arch_width",
              "tests/model/test_accounting.py::test_training_flops_match_xla_cost_analysis")),
    Mutation("registry-counts-of-dot-for-all", "dlrm_jax/model/accounting.py",
             "return REGISTRY[model_cfg.interaction].counts(model_cfg, num_sparse)",
             'return REGISTRY["dot"].counts(model_cfg, num_sparse)',
             "the accounting counts the interaction's parameters and FLOPs by its own registry entry",
             ("tests/model/test_registry.py::test_a_registered_interaction_trains_and_is_counted",
              "tests/model/test_accounting.py::test_interaction_counts_by_hand")),
    Mutation("registry-name-unchecked", "dlrm_jax/model/interactions/__init__.py",
             "    if name not in REGISTRY:\n", "    if False:\n",
             "an unknown model.interaction exits 2 with one line naming the registered ones",
             ("tests/model/test_registry.py::test_an_unregistered_name_exits_2_naming_the_registered_ones",
              "tests/test_config.py::test_bad_overrides_raise_one_clear_line")),
    Mutation("registry-only-the-picked-knobs-checked", "dlrm_jax/model/interactions/__init__.py",
             "    for name in REGISTRY:\n        REGISTRY[name].validate(model_cfg)",
             "    for name in [model_cfg.interaction]:\n        REGISTRY[name].validate(model_cfg)",
             "every registered interaction checks its knobs, whichever is picked (a sweep may switch)",
             ("tests/model/test_interactions.py::test_bad_interaction_knobs_are_rejected",)),
    Mutation("registry-unregister-keeps-the-entry", "dlrm_jax/model/interactions/__init__.py",
             "    REGISTRY._remove(name)\n", "    pass\n",
             "a test's interaction is gone from the registry once unregistered",
             ("tests/model/test_registry.py::test_register_refuses_a_taken_name_and_unregister_a_builtin_one",)),
    Mutation("interaction-scope-renamed", "dlrm_jax/model/dlrm.py",
             '.module(m, dtype, "interaction")', '.module(m, dtype, "cross")',
             "the interaction's parameters keep the Flax name older checkpoints hold",
             ("tests/model/test_model.py::test_parameter_names_are_those_checkpoints_hold",)),
    Mutation("multi-hot-mean-not-divided", "dlrm_jax/embedding/bags.py",
             'if self.mode == "mean":', 'if self.mode == "never":',
             "mean pooling averages a bag's rows",
             ("tests/data/test_multihot.py::test_pool_sums_or_averages_each_features_bag",)),
    # -- preemption and faults (issue 24) ------------------------------------------
    Mutation("preemption-save-skipped", "dlrm_jax/train.py",
             "        if saved_step != step:\n", "        if False:\n",
             "a signal saves a checkpoint at the step reached",
             ("tests/run/test_faults.py::test_sigterm_saves_the_step_reached_and_the_rerun_ends_as_the_uninterrupted_run",)),
    Mutation("preemption-log-window-dropped", "dlrm_jax/train.py",
             'window = ckpt.saved_log_window(start_step) if start_step else None',
             'window = None',
             "the resumed run's first log line averages the steps before the signal too",
             ("tests/run/test_faults.py::test_a_stop_between_log_lines_keeps_the_open_window_of_train_losses",)),
    Mutation("lock-state-not-read-again", "dlrm_jax/train.py",
             "        summary = rundir.read_summary(run_dir) if resuming else None\n    if summary",
             "        summary = None\n    if summary",
             "a run finished while this one waited for the lock stays finished",
             ("tests/run/test_faults.py::test_a_run_that_finishes_while_another_waits_for_the_lock_keeps_its_summary",)),
    Mutation("lock-inode-unchecked", "dlrm_jax/run/rundir.py",
             "                same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino",
             "                same = True",
             "the lock is held on the .lock file that exists, not on one its last holder removed",
             ("tests/run/test_faults.py::test_the_lock_is_on_the_file_that_is_there",)),
    Mutation("metrics-partial-line-kept", "dlrm_jax/run/rundir.py",
             "                os.ftruncate(fd, start)", "                pass",
             "a metrics line is written whole or not at all",
             ("tests/run/test_faults.py::test_a_metrics_line_is_written_whole_or_not_at_all",)),
    Mutation("metrics-damaged-line-ends-the-log", "dlrm_jax/run/rundir.py",
             "                continue\n            out.append(event)",
             "                break\n            out.append(event)",
             "valid events after a damaged metrics line are kept",
             ("tests/run/test_faults.py::test_a_damaged_metrics_line_is_reported_and_the_events_after_it_are_kept",)),
    # -- bad input refused before any work (issue 24) -------------------------------
    Mutation("config-numbers-unchecked", "dlrm_jax/config.py",
             "    check_numbers(cfg)\n", "",
             "a config with nan, inf or an int past 2**53 is refused naming its dotted key",
             ("tests/test_input_validation.py::test_config_numbers_must_be_finite_and_in_range",)),
    Mutation("world-non-finite-accepted", "dlrm_jax/data/world.py",
             "    reject_non_finite(d, where)\n", "",
             "a world JSON with NaN or Infinity is refused naming the JSON path",
             ("tests/test_input_validation.py::test_world_json_numbers_must_be_finite",)),
    # Caught here because libtpu is absent (the compile stops at "needs libtpu"); with
    # libtpu installed the mutated run aborts the test process, which reads as ERROR.
    Mutation("slices-limit-dropped", "dlrm_jax/compile/topologies.py",
             "not 1 <= slices <= MAX_SLICES", "not 1 <= slices",
             "compile --slices past libtpu's limit exits 2 before compiling",
             ("tests/test_input_validation.py::test_compile_refuses_bad_topologies_and_slices",)),
    Mutation("plan-topology-hbm-per-device", "analysis/capacity.py",
             "total = s.chips * s.hbm_bytes_per_chip * TABLE_SHARE",
             "total = s.chips * s.hbm_bytes * TABLE_SHARE",
             "plan sizes tables by HBM per chip (tpu7x: 2 devices a chip) from compile's table",
             ("tests/test_input_validation.py::test_plan_and_compile_accept_the_same_slices",)),
    # -- planted truths (issue 25) --------------------------------------------------
    Mutation("planted-shrinkage-lambda-dropped", "analysis/planted.py",
             "            coef = a / (a + c) / special.factorial(c)",
             "            coef = 1.0 / special.factorial(c)",
             "E[1 / (1 + lambda c)] for Poisson c, not 1",
             ("tests/analysis/test_planted.py::test_poisson_shrinkage_is_the_direct_poisson_sum",)),
    Mutation("planted-excess-unweighted-by-popularity", "analysis/planted.py",
             "        w = law.sizes * law.probs\n", "        w = law.sizes / law.sizes.sum()\n",
             "each id's excess is weighted by how often it is seen (p_k)",
             ("tests/analysis/test_planted.py::test_exact_curve_matches_the_research_note",)),
    Mutation("planted-tolerance-ignores-the-interval", "dlrm_jax/planted.py",
             "    tol = max(EXPONENT_TOLERANCE, (hi - lo) / 2)", "    tol = EXPONENT_TOLERANCE",
             "a planted answer passes within max(0.06, its interval's half-width)",
             ("tests/test_planted_study.py::test_an_answer_passes_within_the_tolerance_or_its_interval_and_fails_outside",)),
    Mutation("planted-triple-term-dropped", "dlrm_jax/data/synthetic.py",
             "            logit += self.triple_term(ids)", "            pass",
             "a world's trilinear term enters the teacher's logit (and so the Bayes NE)",
             ("tests/data/test_planted_worlds.py::test_the_trilinear_term_is_the_documented_product_and_only_it_differs_from_the_control",)),
    Mutation("planted-spectrum-unsorted", "dlrm_jax/data/synthetic.py",
             "            lam2 = np.arange(1, latent_dim + 1, dtype=np.float64) ** -world.latent_rho",
             "            lam2 = np.arange(latent_dim, 0, -1, dtype=np.float64) ** -world.latent_rho",
             "the latent spectrum falls with the component index",
             ("tests/data/test_planted_worlds.py::test_explicit_pairs_and_a_latent_spectrum_set_the_pair_term",)),
    Mutation("isoflop-bracket-never-extends", "sweeps/isoflop.py",
             "        if len(have) < 2 or have[0] < best < have[-1]:",
             "        if len(have) < 2 or have[0] <= best <= have[-1]:",
             "a budget whose best size is at an edge of the grid gets the next size beyond it",
             ("tests/sweeps/test_isoflop.py::test_a_budget_whose_best_size_is_at_an_edge_gets_the_next_size_beyond_it",)),
    Mutation("runner-extension-ignored", "sweeps/runner.py",
             "                if not more:\n                    break", "                if True:\n                    break",
             "the runner runs the points a sweep adds once its grid is done",
             ("tests/sweeps/test_isoflop.py::test_the_runner_runs_the_points_a_sweep_adds_and_a_rerun_adds_none",)),
    # -- the embedding-backend seam (issue 21) --------------------------------------
    Mutation("sparsecore-torch-optimizers-accepted", "dlrm_jax/embedding/support.py",
             'SPARSECORE_OPTIMIZERS = ("sgd", "adagrad")',
             'SPARSECORE_OPTIMIZERS = ("sgd", "adagrad", "adagrad_torch", "rowwise_adagrad_torch")',
             "the SparseCore backend refuses the optimizers it does not implement, at config time",
             ("tests/embedding/test_sparsecore.py::test_torch_adagrad_with_sparsecore_is_a_config_error",
              "tests/embedding/test_backend.py::test_sparsecore_refuses_an_optimizer_through_the_cli_before_looking_for_devices")),
    Mutation("single-device-optimizers-gain-one", "dlrm_jax/embedding/support.py",
             "SINGLE_DEVICE_OPTIMIZERS = OPTIMIZERS", 'SINGLE_DEVICE_OPTIMIZERS = OPTIMIZERS + ("adam",)',
             "the single-device backend refuses an optimizer it does not implement, at config time",
             ("tests/embedding/test_backend.py::test_an_unsupported_optimizer_is_a_config_error_naming_the_supported_ones",)),
    Mutation("sharded-optimizers-gain-one", "dlrm_jax/embedding/support.py",
             "SHARDED_OPTIMIZERS = OPTIMIZERS", 'SHARDED_OPTIMIZERS = OPTIMIZERS + ("adam",)',
             "the sharded backend refuses an optimizer it does not implement, at config time",
             ("tests/embedding/test_backend.py::test_an_unsupported_optimizer_is_a_config_error_naming_the_supported_ones",)),
    Mutation("config-ignores-the-backends-optimizers", "dlrm_jax/config.py",
             '    need(why is None, why or "")\n', "",
             "config validation asks the chosen backend's OPTIMIZERS",
             ("tests/embedding/test_backend.py::test_an_unsupported_optimizer_is_a_config_error_naming_the_supported_ones",
              "tests/embedding/test_sparsecore.py::test_torch_adagrad_with_sparsecore_is_a_config_error")),
    Mutation("tensorcore-kind-ignores-the-mesh", "dlrm_jax/embedding/support.py",
             '    if product > 1:\n        return ("sharded",)\n', "",
             "with mesh.data or mesh.model above 1 the config knows the backend is the sharded one",
             ("tests/embedding/test_backend.py::test_a_mesh_that_fills_the_devices_accepts_what_both_tensorcore_backends_support",)),
    Mutation("make-backend-skips-the-class-optimizers", "dlrm_jax/embedding/backend.py",
             "    if e.optimizer not in backend.OPTIMIZERS:", "    if False:",
             "a backend built from an unvalidated config still refuses an optimizer it lacks",
             ("tests/embedding/test_backend.py::test_make_backend_refuses_what_its_backend_cannot_run",)),
    Mutation("make-backend-by-mesh-not-devices", "dlrm_jax/embedding/backend.py",
             "        if data * model_axis == 1:", "        if cfg.mesh.model == 1:",
             "tensorcore is single-device exactly when the mesh has one device",
             ("tests/embedding/test_backend.py::test_make_backend_picks_the_backend_by_device_count",)),
    Mutation("fixed-predict-batch-keeps-padding", "dlrm_jax/parallel/steps.py",
             "*backend.put_eval(d, s)))[:b - pad])", "*backend.put_eval(d, s))))",
             "a fixed predict batch (SparseCore) drops the logits of its padding rows",
             ("tests/embedding/test_backend.py::test_a_fixed_predict_batch_runs_any_chunk_in_padded_pieces",)),
    Mutation("sharded-stats-dropped", "dlrm_jax/embedding/sharded.py",
             'stats = {"exchange_rounds": rounds, "exchange_overflow_ids": overflow}', "stats = {}",
             "the sharded backend's update returns its exchange counters with the state",
             ("tests/embedding/test_backend.py::test_parallelize_runs_each_tensorcore_backend_through_the_same_seam",)),
    Mutation("relayout-refuses-tables-placed-elsewhere", "dlrm_jax/embedding/relayout.py",
             "return (RELAID, None) if same_tables(saved, target) else (AS_SAVED, why)", "return AS_SAVED, why",
             "a checkpoint whose tables sit in other groups is laid out anew, not refused",
             ("tests/embedding/test_backend.py::test_how_a_checkpoint_layout_is_restored_into_the_runs",
              "tests/parallel/test_sharding_train.py::test_checkpoint_with_tables_elsewhere_is_laid_out_anew")),
]


# Entries kept beside this file by area, as tuples of Mutation's fields.
MUTATIONS += [Mutation(*entry) for entry in mutations_gcs.ENTRIES]


class Stop(Exception):
    """SIGTERM / SIGHUP: unwind through the finally that restores the file."""


def _stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # No .pyc of a mutated file is ever written, so none can outlive the mutation.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _pytest(nodes: list[str], timeout: float) -> tuple[int | None, float, str]:
    """(pytest exit code or None on timeout, seconds, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *nodes]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
        return r.returncode, time.perf_counter() - t, (r.stdout + r.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t, ""


def check_snippets(mutations: list[Mutation]) -> list[str]:
    """One line per mutation whose snippet is not in its file exactly once."""
    problems = []
    for m in mutations:
        path = ROOT / m.path
        if not path.is_file():
            problems.append(f"{m.name}: {m.path} does not exist (moved or renamed?)")
            continue
        text = path.read_text()
        n = text.count(m.original)
        if n == 1:
            continue
        snippet = m.original.strip().splitlines()[0]
        if n == 0:
            hint = (" (the mutated text is there: an earlier run was killed; `git checkout` the file)"
                    if m.replacement in text else "")
            problems.append(f"{m.name}: snippet not found in {m.path}{hint}: {snippet!r} -- the code changed; "
                            f"update this entry in scripts/mutation_check.py")
        else:
            problems.append(f"{m.name}: snippet occurs {n} times in {m.path}, must be once: {snippet!r}")
    return problems


def run_mutation(m: Mutation, timeout: float, report) -> bool:
    """Apply m, run each of its tests, restore the file; True if every test failed."""
    path = ROOT / m.path
    original = path.read_bytes()
    st = path.stat()
    text = original.decode()
    caught_all = True
    try:
        path.write_text(text.replace(m.original, m.replacement, 1))
        # A modification time the original never had, so no cached bytecode matches.
        now = max(time.time(), st.st_mtime + 2)
        os.utime(path, (now, now))
        for node in m.tests:
            code, secs, tail = _pytest([node], timeout)
            if code == 1:
                result = "caught"
            elif code == 0:
                result = "MISSED"
            elif code is None:
                result = f"TIMEOUT>{timeout:.0f}s"
            else:
                result = f"ERROR rc={code}"
            caught_all &= result == "caught"
            report(m.name, node, result, secs)
            if result.startswith("ERROR"):
                print(tail, file=sys.stderr)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return caught_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only mutations whose name contains this")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip running the tests unmutated first")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m.name]
    if not chosen:
        print(f"no mutation name contains {args.k!r}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.path}: {m.original.strip()!r} -> {m.replacement.strip()!r}\n"
                  f"    claim: {m.claim}\n" + "".join(f"    test:  {t}\n" for t in m.tests))
        return 0

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    problems = check_snippets(chosen)
    for p in problems:
        print(f"NOT FOUND  {p}", flush=True)
    runnable = [m for m in chosen if not any(p.startswith(f"{m.name}:") for p in problems)]

    if not args.no_baseline and runnable:
        nodes = sorted({t for m in runnable for t in m.tests})
        code, secs, tail = _pytest(nodes, args.timeout)
        print(f"baseline: {len(nodes)} tests on the unmutated code: "
              f"{'pass' if code == 0 else 'FAIL'} ({secs:.0f} s)", flush=True)
        if code != 0:
            print(tail, file=sys.stderr)
            print("the named tests must pass before a mutation can be judged", file=sys.stderr)
            return 2

    width = max(len(m.name) for m in runnable) if runnable else 10
    rows = []

    def report(name, node, result, secs):
        rows.append((name, node, result, secs))
        print(f"{name:<{width}}  {result:<8}  {secs:6.1f} s  {node}", flush=True)

    print(f"{'mutation':<{width}}  {'result':<8}  {'time':>8}  test", flush=True)
    missed = []
    try:
        for m in runnable:
            if not run_mutation(m, args.timeout, report):
                missed.append(m.name)
    except (KeyboardInterrupt, Stop) as e:
        print(f"interrupted ({type(e).__name__} {e}); the mutated file was restored", file=sys.stderr)
        return 130
    total = sum(r[3] for r in rows)
    print(f"\n{len(runnable) - len(missed)} of {len(runnable)} mutations caught by every named test "
          f"({len(rows)} test runs, {total:.0f} s)" + (f"; not caught: {', '.join(missed)}" if missed else ""))
    if problems:
        print(f"{len(problems)} mutation(s) not applied (snippet not found exactly once):")
        for p in problems:
            print(f"  {p}")
        return 2
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
