"""Owner-side partial pooling of multi-hot bags: ids one way, one pooled vector per (bag, owner) each way.

The per-id exchange (`exchange.py`) moves one row per unique id of a device's
bags, both ways.  A bag of k ids pooled by sum (or mean) needs only the sum of
its rows, and the rows a bag holds on one owner can be summed there.  Per
device, with b examples and the F_g bags per example of a sharded group:

    route     entries (owner, row, bag, weight): one per distinct id of a bag
              (an id repeated within a bag is one entry, its weights summed);
              units (owner, bag): the bags with at least one entry on an owner
    lookup    entries [N x Ce] (row, unit, weight) -> all-to-all -> the owner
              gathers the rows, scales them by the weights and sums them per
              unit -> [N x Cu, D] -> all-to-all back -> each bag adds its
              owners' partial sums
    update    the pooled gradient of each unit [N x Cu, D] and the entries again
              -> all-to-all -> the owner gives each entry weight x its bag's
              gradient and applies the sparse optimizer (`sparse_update` sums
              an id's entries over bags, examples and devices: the per-row
              dedup of the single-device step)

A bag of 100 ids over 64 owners has about 51 units: one vector per unit
instead of one per id.  Weights are the pooling's (1, or 1 / k for mean)
times per-entry weights when bags have them.

Capacities come from the ids' distribution on interleaved rows (an id's owner
uniform over N): a device's units for one owner are a sum of b x F_g
independent indicators, mean mu_u = b sum_f (1 - (1 - 1/N)^k_f), and its
entries have mean mu_e = b K_g / N; each buffer holds mean + 6 standard
deviations (at most mean + 6 sqrt(mean)), and at least b (see `rounds`).
Exactness as in `exchange.py`: nothing is dropped; a device that has more
for an owner than fits runs more rounds over row windows all devices agree
on (`pmin`), here bounded by both capacities, so every row's entries from
every device reach its owner in one round and the Adagrad update of each
round is exact.  The counters (`exchange.ExchangeStats`) count entries sent
after the first round.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from dlrm_jax.embedding.exchange import ExchangeStats, all_to_all

SIGMAS = 6.0   # standard deviations of headroom over the mean of each buffer


class BagRouting(NamedTuple):
    """A device's unique (owner, row, bag) entries sorted by (owner, row, bag), and its (owner, bag) units."""
    owner: jax.Array     # [n] owner of entry i (N: padding)
    row: jax.Array       # [n] row within the owner's block (S: padding)
    weight: jax.Array    # [n] summed weights of the entry's occurrences (0: padding)
    start: jax.Array     # [N + 1] first entry of each owner
    unit: jax.Array      # [n] the unit of entry i
    u_owner: jax.Array   # [n] owner of unit u (N: padding), units sorted by (owner, bag)
    u_bag: jax.Array     # [n] bag of unit u (nb: padding)
    u_start: jax.Array   # [N + 1] first unit of each owner


def capacities(examples: int, bag_sizes: Sequence[int], num_shards: int) -> tuple[int, int]:
    """(Ce, Cu): entries and units one device sends one owner per round (module docstring)."""
    n, ks = num_shards, [int(k) for k in bag_sizes]
    mu_e = examples * sum(ks) / n
    mu_u = examples * sum(1.0 - (1.0 - 1.0 / n) ** k for k in ks)   # P(a bag of k ids touches an owner)

    def cap(mu: float, most: int) -> int:
        return max(1, min(most, max(examples, math.ceil(mu + SIGMAS * math.sqrt(mu)))))

    return cap(mu_e, examples * sum(ks)), cap(mu_u, examples * len(ks))


def bytes_per_step(examples: int, bag_sizes: Sequence[int], num_shards: int, dim: int) -> int:
    """All-to-all bytes per device and step (one round): entries (row, unit, weight) and unit vectors, both ways."""
    ce, cu = capacities(examples, bag_sizes, num_shards)
    return 2 * num_shards * (ce * 12 + cu * dim * 4)


def route(owner: jax.Array, row: jax.Array, bag: jax.Array, weight: jax.Array, num_shards: int, shard_rows: int,
          num_bags: int) -> BagRouting:
    """owner, row, bag [...] int32, weight [...] float -> their BagRouting."""
    n, N = owner.size, num_shards
    s_o, s_r, s_b, s_w = jax.lax.sort((owner.reshape(-1), row.reshape(-1), bag.reshape(-1),
                                       weight.reshape(-1).astype(jnp.float32)), num_keys=3)
    new = jnp.concatenate([jnp.ones((1,), bool), (s_o[1:] != s_o[:-1]) | (s_r[1:] != s_r[:-1]) |
                           (s_b[1:] != s_b[:-1])])
    uid = jnp.cumsum(new.astype(jnp.int32)) - 1
    e_owner = jnp.full((n,), N, jnp.int32).at[uid].set(s_o)      # duplicates write equal values
    e_row = jnp.full((n,), shard_rows, jnp.int32).at[uid].set(s_r)
    e_bag = jnp.full((n,), num_bags, jnp.int32).at[uid].set(s_b)
    e_weight = jax.ops.segment_sum(s_w, uid, num_segments=n)
    arange = jnp.arange(N + 1, dtype=jnp.int32)
    start = jnp.searchsorted(e_owner, arange).astype(jnp.int32)
    # Units: the distinct (owner, bag) pairs of the entries, sorted by (owner, bag).
    g_o, g_b, idx = jax.lax.sort((e_owner, e_bag, jnp.arange(n, dtype=jnp.int32)), num_keys=2)
    g_new = jnp.concatenate([jnp.ones((1,), bool), (g_o[1:] != g_o[:-1]) | (g_b[1:] != g_b[:-1])])
    gid = jnp.cumsum(g_new.astype(jnp.int32)) - 1
    unit = jnp.zeros((n,), jnp.int32).at[idx].set(gid)
    u_owner = jnp.full((n,), N, jnp.int32).at[gid].set(g_o)
    u_bag = jnp.full((n,), num_bags, jnp.int32).at[gid].set(g_b)
    u_start = jnp.searchsorted(u_owner, arange).astype(jnp.int32)
    return BagRouting(e_owner, e_row, e_weight, start, unit, u_owner, u_bag, u_start)


class Round(NamedTuple):
    """Where this round puts each entry and unit of the device's routing."""
    send: jax.Array      # [n] entry i is sent this round
    e_slot: jax.Array    # [n] its slot in the [N x Ce] entry buffer (N x Ce: not sent)
    e_unit: jax.Array    # [n] its unit's slot within the owner's Cu (Cu: not sent)
    u_slot: jax.Array    # [n] unit u's slot in the [N x Cu] unit buffer (N x Cu: not sent)


def rounds(rt: BagRouting, num_shards: int, shard_rows: int, ce: int, cu: int, axes, body: Callable, carry):
    """Run `body(carry, Round) -> carry` once per round until every entry was sent; (carry, ExchangeStats).

    Round r sends, for each owner k, the entries with rows in [lo_k, hi_k):
    hi_k is the smallest over devices of the row where a device's (Ce+1)-th
    remaining entry, or the first entry of its (Cu+1)-th remaining unit,
    would start.  A window therefore always takes the next row: a device has
    at most b entries (and units) of one row, and Ce, Cu >= b.
    """
    n, N, S = rt.owner.shape[0], num_shards, shard_rows
    valid, u_valid = rt.owner < N, rt.u_owner < N
    o, uo = jnp.minimum(rt.owner, N - 1), jnp.minimum(rt.u_owner, N - 1)
    slots = jnp.arange(n, dtype=jnp.int32)

    def bounds(lo):
        rest = valid & (rt.row >= lo[o])
        first = rt.start[:N] + jnp.zeros((N,), jnp.int32).at[rt.owner].add((valid & ~rest).astype(jnp.int32),
                                                                          mode="drop")
        nxt = first + ce
        by_entries = jnp.where(nxt < rt.start[1:], rt.row[jnp.minimum(nxt, n - 1)], S)
        # A unit's first remaining row; its owner's units sorted by it: the (Cu+1)-th would start there.
        u_first = jax.ops.segment_min(jnp.where(rest, rt.row, S), rt.unit, num_segments=n)
        u_first = jnp.where(u_valid, jnp.minimum(u_first, S), S)
        _, by_row = jax.lax.sort((rt.u_owner, u_first), num_keys=2)
        nu = rt.u_start[:N] + cu
        by_units = jnp.where(nu < rt.u_start[1:], by_row[jnp.minimum(nu, n - 1)], S)
        return first, jnp.minimum(by_entries, by_units)

    def step(state):
        r, lo, carry, overflow, _ = state
        first, bound = bounds(lo)
        hi = jax.lax.pmin(bound, axes)                                     # [N]: the agreed windows
        send = valid & (rt.row >= lo[o]) & (rt.row < hi[o])
        e_slot = jnp.where(send, o * ce + slots - first[o], N * ce)
        active = u_valid & (jax.ops.segment_max(send.astype(jnp.int32), rt.unit, num_segments=n) > 0)
        c = jnp.cumsum(active.astype(jnp.int32))
        before = jnp.where(rt.u_start[:N] > 0, c[jnp.maximum(rt.u_start[:N] - 1, 0)], 0)
        rank = c - 1 - before[uo]                                           # among the owner's active units
        u_slot = jnp.where(active, uo * cu + rank, N * cu)
        e_unit = jnp.where(send, rank[rt.unit], cu)
        carry = body(carry, Round(send, e_slot, e_unit, u_slot))
        overflow = overflow + jnp.where(r > 0, send.sum(dtype=jnp.int32), 0)
        left = jax.lax.pmax((valid & (rt.row >= hi[o])).sum(dtype=jnp.int32), axes)
        return r + 1, hi, carry, overflow, left > 0

    init = (jnp.int32(0), jnp.zeros((N,), jnp.int32), carry, jnp.int32(0), jnp.bool_(True))
    r, _, carry, overflow, _ = jax.lax.while_loop(lambda s: s[-1], step, init)
    return carry, ExchangeStats(r, jax.lax.psum(overflow, axes))


def _send_entries(rt: BagRouting, rd: Round, num_shards: int, shard_rows: int, ce: int, cu: int, axes):
    """This round's entries to their owners -> what this device received as owner:
    (rows [N x Ce] (S: unused), unit targets [N x Ce] in the [N x Cu] buffer (N x Cu: unused), weights)."""
    nc = num_shards * ce
    rows = jnp.full((nc,), shard_rows, jnp.int32).at[rd.e_slot].set(rt.row, mode="drop")
    units = jnp.full((nc,), cu, jnp.int32).at[rd.e_slot].set(rd.e_unit, mode="drop")
    weights = jnp.zeros((nc,), jnp.float32).at[rd.e_slot].set(rt.weight, mode="drop")
    packed = jnp.stack([rows, units, jax.lax.bitcast_convert_type(weights, jnp.int32)], axis=1)   # one all-to-all
    got = all_to_all(packed, axes)
    rows, units = got[:, 0], got[:, 1]
    weights = jax.lax.bitcast_convert_type(got[:, 2], jnp.float32)
    sender = jnp.arange(nc, dtype=jnp.int32) // ce                 # block j came from device j
    target = jnp.where(units < cu, sender * cu + units, num_shards * cu)
    return rows, target, weights


def _slot_bags(rt: BagRouting, rd: Round, ncu: int, num_bags: int) -> jax.Array:
    """[N x Cu]: the bag of each unit slot of this round (num_bags: empty)."""
    return jnp.full((ncu,), num_bags, jnp.int32).at[rd.u_slot].set(rt.u_bag, mode="drop")


def lookup(table: jax.Array, owner: jax.Array, row: jax.Array, bag: jax.Array, weight: jax.Array, num_bags: int,
           num_shards: int, ce: int, cu: int, axes):
    """table [S, D] (this device's block); owner, row, bag, weight [...] of the device's bag entries
    -> (pooled [num_bags, D]: sum of weight x row per bag, ExchangeStats)."""
    S, D = table.shape
    rt = route(owner, row, bag, weight, num_shards, S, num_bags)
    ncu = num_shards * cu

    def body(pooled, rd: Round):
        rows, target, weights = _send_entries(rt, rd, num_shards, S, ce, cu, axes)
        found = jnp.take(table, rows, axis=0, mode="fill", fill_value=0) * weights[:, None].astype(table.dtype)
        partial = jnp.zeros((ncu, D), table.dtype).at[target].add(found, mode="drop")   # per unit, on the owner
        back = all_to_all(partial, axes)                                                 # my units' sums
        return pooled.at[_slot_bags(rt, rd, ncu, num_bags)].add(back, mode="drop")

    return rounds(rt, num_shards, S, ce, cu, axes, body, jnp.zeros((num_bags, D), table.dtype))


def update(apply: Callable, state, owner: jax.Array, row: jax.Array, bag: jax.Array, weight: jax.Array,
           pooled_grads: jax.Array, num_shards: int, shard_rows: int, ce: int, cu: int, axes):
    """The pooled gradients [num_bags, D] to the owners of the bags' entries; each round calls
    `apply(state, rows [N x Ce], grads [N x Ce, D])` with weight x the bag's gradient per entry
    (rows `shard_rows`: unused slots).  Returns (state, ExchangeStats)."""
    num_bags, D = pooled_grads.shape
    rt = route(owner, row, bag, weight, num_shards, shard_rows, num_bags)
    ncu = num_shards * cu

    def body(st, rd: Round):
        rows, target, weights = _send_entries(rt, rd, num_shards, shard_rows, ce, cu, axes)
        mine = pooled_grads.at[_slot_bags(rt, rd, ncu, num_bags)].get(mode="fill", fill_value=0)
        got = all_to_all(mine, axes)                                                     # [N x Cu, D] as owner
        grads = got.at[target].get(mode="fill", fill_value=0) * weights[:, None].astype(got.dtype)
        return apply(st, rows, grads)

    return rounds(rt, num_shards, shard_rows, ce, cu, axes, body, state)
