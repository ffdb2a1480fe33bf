"""Owner-routed embedding exchange: each device moves only its own examples' ids, rows and gradients.

Runs inside `shard_map` over every device of the mesh (N devices); a sharded
table group is split into N row blocks of S rows (`placement.py`), block k on
the device with linear index k.  Per device, with n = b x K ids of its own b
examples (K id columns of the group):

    route     sort the n (owner, row) pairs, keep each unique pair once (dedup:
              a hot Zipf id is sent once per device, not once per occurrence)
    lookup    requests [N, C] -> all-to-all -> the owner gathers the rows
              [N, C, D] -> all-to-all back -> each id takes its unique row
    update    duplicate ids' gradients summed per unique row -> [N, C, D] to the
              owners by all-to-all -> each owner applies the sparse optimizer
              to its own rows (`optimizers.sparse_update` sums what several
              devices sent for one row)

Every buffer is [N x C] with the capacity C = ceil(headroom x n / N) (at most
n): N x C ~ headroom x n, the device's own ids, whatever the device count, as
mixture-of-experts dispatch sizes its buffers.  `jax.lax.ragged_all_to_all`
would avoid the headroom but does not compile on XLA:CPU (docs/DESIGN.md section 2.3),
so this fixed-capacity path is the one the tests run.

Overflow is never dropped.  When a device holds more than C unique ids for one
owner (skewed ids, or few owners), the exchange runs more rounds.  Round r
sends, for each owner k, the ids in a window of row numbers [lo_k, hi_k) that
every device agrees on: hi_k is the smallest, over devices, of the (C+1)-th
smallest row a device still has for k (a `pmin` of N int32), so no device has
more than C ids in the window, and each device that defined hi_k sends C of
them.  Because windows are disjoint row ranges, every row reaches its owner in
exactly one round, from all devices at once: the (non-linear) Adagrad update of
each round is exact, not an approximation of the one-round update.  The number
of rounds and of ids sent after the first are returned as counters
(`ExchangeStats`), which the train loop logs.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# Capacity headroom over an even spread of a device's ids over owners.  2 is
# the usual MoE capacity factor; on synthetic criteo-mlperf ids with interleaved
# rows the busiest owner got 0.24x (8 devices), 0.28x (32) and 0.62x (256, full
# tables) of that capacity, so one round carried every id (scripts/owner_load.py,
# docs/BENCHMARKS.md).
DEFAULT_HEADROOM = 2.0


class Routing(NamedTuple):
    """A device's n ids, deduplicated and sorted by (owner, row); unique slots padded to n."""
    perm: jax.Array     # [n] original position of the i-th sorted id
    uid: jax.Array      # [n] unique slot of the i-th sorted id
    owner: jax.Array    # [n] owner of unique slot u (N: padding)
    row: jax.Array      # [n] row within the owner's block (S: padding)
    start: jax.Array    # [N + 1] first unique slot of each owner


class ExchangeStats(NamedTuple):
    rounds: jax.Array         # int32: all-to-all rounds this step took (1 without overflow)
    overflow_ids: jax.Array   # int32: unique ids sent after the first round, summed over devices


def capacity(ids_per_device: int, num_shards: int, headroom: float = DEFAULT_HEADROOM) -> int:
    """C: ids one device sends one owner per round."""
    c = -(-int(headroom * ids_per_device) // num_shards)
    return max(1, min(ids_per_device, c))


def route(owner: jax.Array, row: jax.Array, num_shards: int, shard_rows: int) -> Routing:
    """owner, row [...] int32 (owner < N, row < S) -> their Routing."""
    n = owner.size
    s_owner, s_row, perm = jax.lax.sort((owner.reshape(-1), row.reshape(-1), jnp.arange(n, dtype=jnp.int32)),
                                        num_keys=2)
    new = jnp.concatenate([jnp.ones((1,), bool), (s_owner[1:] != s_owner[:-1]) | (s_row[1:] != s_row[:-1])])
    uid = jnp.cumsum(new.astype(jnp.int32)) - 1
    u_owner = jnp.full((n,), num_shards, jnp.int32).at[uid].set(s_owner)  # duplicates write equal values
    u_row = jnp.full((n,), shard_rows, jnp.int32).at[uid].set(s_row)
    start = jnp.searchsorted(u_owner, jnp.arange(num_shards + 1, dtype=jnp.int32)).astype(jnp.int32)
    return Routing(perm, uid, u_owner, u_row, start)


def rounds(rt: Routing, num_shards: int, shard_rows: int, cap: int, axes, body: Callable, carry):
    """Run `body(carry, send [n] bool, slot [n] int32) -> carry` once per round until every id was sent.

    slot: where unique id u sits in this round's [N x C] send buffer (N x C when
    it is not sent this round).  Returns (carry, ExchangeStats).
    """
    n, N, C = rt.owner.shape[0], num_shards, cap
    valid = rt.owner < N
    o = jnp.minimum(rt.owner, N - 1)
    slots = jnp.arange(n, dtype=jnp.int32)

    def window(lo):
        """This device's first unsent slot per owner, and the row that would be its (C+1)-th id."""
        below = (valid & (rt.row < lo[o])).astype(jnp.int32)
        first = rt.start[:N] + jnp.zeros((N,), jnp.int32).at[rt.owner].add(below, mode="drop")
        nxt = first + C
        bound = jnp.where(nxt < rt.start[1:], rt.row[jnp.minimum(nxt, n - 1)], shard_rows)
        return first, bound

    def step(state):
        r, lo, carry, overflow, _ = state
        first, bound = window(lo)
        hi = jax.lax.pmin(bound, axes)                                     # [N]: the agreed windows
        send = valid & (rt.row >= lo[o]) & (rt.row < hi[o])
        slot = jnp.where(send, o * C + slots - first[o], N * C)
        carry = body(carry, send, slot)
        overflow = overflow + jnp.where(r > 0, send.sum(dtype=jnp.int32), 0)
        left = jax.lax.pmax((valid & (rt.row >= hi[o])).sum(dtype=jnp.int32), axes)
        return r + 1, hi, carry, overflow, left > 0

    init = (jnp.int32(0), jnp.zeros((N,), jnp.int32), carry, jnp.int32(0), jnp.bool_(True))
    r, _, carry, overflow, _ = jax.lax.while_loop(lambda s: s[-1], step, init)
    return carry, ExchangeStats(r, jax.lax.psum(overflow, axes))


def all_to_all(x: jax.Array, axes) -> jax.Array:
    """[N x C, ...]: block k to device k; block k of the result came from device k."""
    return jax.lax.all_to_all(x, axes, 0, 0, tiled=True)


def lookup(table: jax.Array, owner: jax.Array, row: jax.Array, num_shards: int, cap: int, axes):
    """table [S, D] (this device's block), owner/row [b, K] -> (rows [b, K, D], ExchangeStats)."""
    S, D = table.shape
    rt = route(owner, row, num_shards, S)
    n, NC = rt.owner.shape[0], num_shards * cap

    def body(u_rows, send, slot):
        requests = jnp.full((NC,), S, jnp.int32).at[slot].set(rt.row, mode="drop")
        requests = all_to_all(requests, axes)                                   # [N x C] rows asked of me
        found = jnp.take(table, requests, axis=0, mode="fill", fill_value=0)   # [N x C, D]
        back = all_to_all(found, axes)                                          # [N x C, D] my answers
        return jnp.where(send[:, None], back[jnp.minimum(slot, NC - 1)], u_rows)

    u_rows, stats = rounds(rt, num_shards, S, cap, axes, body, jnp.zeros((n, D), table.dtype))
    rows = jnp.zeros_like(u_rows).at[rt.perm].set(u_rows[rt.uid])
    return rows.reshape(*owner.shape, D), stats


def update(apply: Callable, state, owner: jax.Array, row: jax.Array, grads: jax.Array, num_shards: int,
           shard_rows: int, cap: int, axes):
    """Route summed row gradients to their owners; each round calls `apply(state, rows [N x C], grads [N x C, D])`.

    owner/row [b, K], grads [b, K, D].  rows hold `shard_rows` (out of range)
    in unused slots.  Returns (state, ExchangeStats).
    """
    rt = route(owner, row, num_shards, shard_rows)
    n, NC = rt.owner.shape[0], num_shards * cap
    g = grads.reshape(n, -1)
    u_grads = jax.ops.segment_sum(g[rt.perm], rt.uid, num_segments=n)           # duplicates summed

    def body(st, send, slot):
        ids = jnp.full((NC,), shard_rows, jnp.int32).at[slot].set(rt.row, mode="drop")
        gs = jnp.zeros((NC, g.shape[1]), g.dtype).at[slot].set(u_grads, mode="drop")
        return apply(st, all_to_all(ids, axes), all_to_all(gs, axes))

    return rounds(rt, num_shards, shard_rows, cap, axes, body, state)
