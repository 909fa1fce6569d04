"""The request router of hologram's replica deployment (Ray Serve's ``RequestRouter`` API).

It runs inside each caller's deployment handle, here the ingress, and picks a replica per
request from the keyword arguments the ingress passes:

* ``target``: one replica's id. Only that replica will do (the ingress gathers every
  replica's ``/metrics`` this way).
* ``prefix``: the request's prefix keys (:mod:`hologram.ray.prefix`), shortest first. In
  ``prefix`` mode the replica that last served the longest known key gets the request, unless
  it has more than ``imbalance`` requests in flight beyond the least busy replica; a request
  with no known key goes to the least busy replica (among equally busy ones, the one owning
  fewest prompts), which claims its keys at once, so requests of the same prefix routed
  meanwhile follow it. Then every key of the request points at the replica that took it.
* otherwise, and in ``pow2`` mode always, Ray Serve's own power-of-two-choices rule (two random
  replicas, the one with the shorter queue).

Requests are matched to their own choice (no FIFO hand-over between waiting requests, which
would defeat the affinity). The ids of the replicas the router knows are published in
:mod:`hologram.ray.registry` for the ingress of the same process.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from hologram.ray import registry

__all__ = ["HologramRouter"]

logger = logging.getLogger("ray.serve")

#: Default of ``imbalance``: in-flight requests the owner of a prefix may have beyond the
#: least busy replica before a request spills over.
DEFAULT_IMBALANCE = 8
#: Prefix keys remembered (least recently used ones are forgotten first).
MAX_KEYS = 100_000


def _kwargs(pending: PendingRequest | None) -> dict[Any, Any]:
    if pending is None or not isinstance(pending.kwargs, dict):
        return {}
    return pending.kwargs


class HologramRouter(LocalityMixin, MultiplexMixin, RequestRouter):
    """Prefix-affinity (``mode="prefix"``) or power-of-two-choices (``mode="pow2"``)
    routing, both honouring ``target``."""

    def initialize_state(self, mode: str = "prefix", imbalance: int = DEFAULT_IMBALANCE,
                         **_: Any) -> None:
        self.mode = mode if mode in ("prefix", "pow2") else "prefix"
        self.imbalance = max(0, int(imbalance))
        self.owners: OrderedDict[str, ReplicaID] = OrderedDict()
        #: Per replica, the shortest keys (distinct prompt roots) it owns: a new prefix goes
        #: to the least busy replica, and among equally busy ones to the one owning fewest.
        self.roots: dict[ReplicaID, set[str]] = {}

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        registry.KNOWN[self._deployment_id.name] = sorted(r.replica_id.unique_id for r in replicas)
        live = {r.replica_id for r in replicas}
        for key in [k for k, rid in self.owners.items() if rid not in live]:
            del self.owners[key]
        for rid in [rid for rid in self.roots if rid not in live]:
            del self.roots[rid]

    def _load(self, replica: RunningReplica) -> int:
        n = self.replica_queue_len_cache.get(replica.replica_id)
        return int(n) if n is not None else 0

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        try:
            return await self._choose(candidate_replicas, pending_request)
        except Exception:  # a failure here would leave the request unrouted for good
            logger.exception("hologram router: routing by load instead")
            return [list(candidate_replicas)]

    async def _choose(self, candidate_replicas: list[RunningReplica],
                      pending_request: PendingRequest | None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:
            # Back off between rounds when every ranked replica is full.
            pending_request.routing_context.should_backoff = True
        kwargs = _kwargs(pending_request)
        target = kwargs.get("target")
        if isinstance(target, str):
            return [[r for r in candidate_replicas if r.replica_id.unique_id == target]]
        keys = kwargs.get("prefix")
        if self.mode == "pow2" or not isinstance(keys, list) or not keys:
            ranks: list[list[RunningReplica]] = \
                await PowerOfTwoChoicesRequestRouter.choose_replicas(
                    self, candidate_replicas, pending_request)  # type: ignore[arg-type]
            return ranks
        by_load = sorted(candidate_replicas, key=lambda r: (
            self._load(r), len(self.roots.get(r.replica_id, ())), random.random()))
        least = self._load(by_load[0])
        for key in reversed(keys):
            owner_id = self.owners.get(key)
            if owner_id is None:
                continue
            owner = next((r for r in candidate_replicas if r.replica_id == owner_id), None)
            if owner is not None and self._load(owner) <= least + self.imbalance:
                return [[owner], [r for r in by_load if r is not owner]]
            break
        # Claim the prefix now: requests of the same prefix routed before this one is sent
        # (routing is concurrent) then follow it instead of picking on their own.
        self._claim(keys, by_load[0].replica_id)
        return [[r] for r in by_load]

    def _claim(self, keys: list[Any], replica_id: ReplicaID) -> None:
        """Point every key at the replica (the shortest one counts as a root it owns)."""
        for key in keys:
            if isinstance(key, str):
                self.owners[key] = replica_id
                self.owners.move_to_end(key)
        if keys and isinstance(keys[0], str):
            for owned in self.roots.values():
                owned.discard(keys[0])
            self.roots.setdefault(replica_id, set()).add(keys[0])
        while len(self.owners) > MAX_KEYS:
            key, rid = self.owners.popitem(last=False)
            self.roots.get(rid, set()).discard(key)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: Any) -> None:
        if self.mode != "prefix":
            return
        kwargs = _kwargs(pending_request)
        keys = kwargs.get("prefix")
        if kwargs.get("target") is not None or not isinstance(keys, list):
            return
        self._claim(keys, replica_id)
