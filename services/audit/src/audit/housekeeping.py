"""``Housekeeping``: the worker component that signs checkpoints, keeps month partitions ahead of time,
applies retention and verifies every chain now and then. Safe to run on several replicas (row locks with
SKIP LOCKED, idempotent steps; verification only reads).

The periodic verification is what lets an operator be told of tampering without asking: each replica
walks every chain every ``BATON_AUDIT_VERIFY_INTERVAL_SECONDS`` (the same check as ``GET
/v1/audit/verify``, without its read record) and exports the outcome on the worker's ``/metrics``:
the chains that failed (labelled with the chain and the first bad sequence), when the last full pass
ended, and how many entries it checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.models import Chain
from audit.chain.service import PartitionKeeper
from audit.chain.verify import BadEntry, VerifyResult, verify_chain
from audit.checkpoints.service import create_due_checkpoints
from audit.checkpoints.signing import Keyring, Signer
from audit.config import AuditSettings
from audit.retention.service import apply_retention, ensure_partitions_ahead
from shared.metrics import family

__all__ = ["Housekeeping", "VerifyPass"]

log = logging.getLogger(__name__)


@dataclass
class VerifyPass:
    """The outcome of the last complete verification of every chain."""

    finished_at: float  # unix time
    seconds: float
    chains: int
    entries: int
    failed: dict[str, BadEntry | None] = field(default_factory=dict)  # chain -> its first bad entry


class Housekeeping:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        signer: Signer,
        settings: AuditSettings,
        keyring: Keyring | None = None,
    ) -> None:
        self.factory = factory
        self.signer = signer
        self.settings = settings
        self.keyring = keyring or Keyring(signer.public)
        self.keeper = PartitionKeeper(factory)
        self.last_verify: VerifyPass | None = None
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._stopping.clear()
        s = self.settings
        jobs = [
            self._every(s.checkpoint_check_interval_seconds, self.checkpoints),
            self._every(s.maintenance_interval_seconds, self.maintain),
        ]
        if s.verify_interval_seconds > 0:
            jobs.append(self._every(s.verify_interval_seconds, self.verify))
        await asyncio.gather(*jobs)

    async def checkpoints(self) -> int:
        return await create_due_checkpoints(
            self.factory,
            self.signer,
            every_entries=self.settings.checkpoint_every_entries,
            every_seconds=self.settings.checkpoint_every_seconds,
        )

    async def maintain(self) -> list[str]:
        await ensure_partitions_ahead(self.factory)
        return await apply_retention(self.factory, self.keeper, keep_months=self.settings.retention_months)

    async def verify(self) -> VerifyPass:
        """Verify every chain, one read-only session each; keep and log the outcome."""
        started = time.monotonic()
        async with self.factory() as session:
            chains = list((await session.execute(select(Chain.chain_id).order_by(Chain.chain_id))).scalars())
        outcome = VerifyPass(finished_at=0.0, seconds=0.0, chains=len(chains), entries=0)
        for chain_id in chains:
            result = await self._verify_chain_unless_stopped(chain_id)
            if result is None:
                return self.last_verify or outcome  # stopped: an unfinished pass reports nothing
            outcome.entries += result.entries_checked
            if not result.ok:
                outcome.failed[chain_id] = result.first_bad
                bad = result.first_bad
                log.error(
                    "audit verify: chain %s is broken at sequence %s (%s: %s)",
                    chain_id,
                    bad.sequence if bad else "?",
                    bad.reason if bad else "?",
                    bad.detail if bad else "",
                )
        outcome.seconds = time.monotonic() - started
        outcome.finished_at = time.time()
        self.last_verify = outcome
        log.info(
            "audit verify: %d chains, %d entries in %.1f s, %d failed",
            outcome.chains,
            outcome.entries,
            outcome.seconds,
            len(outcome.failed),
        )
        return outcome

    async def _verify_chain_unless_stopped(self, chain_id: str) -> VerifyResult | None:
        """One chain's verification, given up (None) as soon as the worker is asked to stop: a long chain
        must not hold the pod past its grace period."""
        if self._stopping.is_set():
            return None

        async def verify_one() -> VerifyResult:
            async with self.factory() as session:
                return await verify_chain(session, chain_id, self.keyring)

        check = asyncio.ensure_future(verify_one())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({check, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not check.done():
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
            return None
        return check.result()

    async def metrics(self) -> list[Metric]:
        """The last complete verification, for alerts (nothing until one has finished)."""
        last = self.last_verify
        if last is None:
            return []
        failed = [
            ({"chain": chain, "sequence": str(bad.sequence if bad else 0), "reason": bad.reason if bad else ""},
             1.0)
            for chain, bad in sorted(last.failed.items())
        ]  # fmt: skip
        return [
            family("gauge", "baton_audit_verify_failed_chains", "Chains the last verification found broken "
                   "(one series per chain, labelled with its first bad sequence)", failed),
            family("gauge", "baton_audit_verify_last_success_timestamp_seconds", "When the last "
                   "verification of every chain ended (unix time)", [({}, last.finished_at)]),
            family("gauge", "baton_audit_verify_chains", "Chains in the last verification",
                   [({}, float(last.chains))]),
            family("gauge", "baton_audit_verify_entries", "Entries checked by the last verification",
                   [({}, float(last.entries))]),
            family("gauge", "baton_audit_verify_duration_seconds", "How long the last verification took",
                   [({}, last.seconds)]),
        ]  # fmt: skip

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            try:
                await job()
            except Exception:
                log.exception(
                    "audit housekeeping: %s failed; trying again later", getattr(job, "__name__", job)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
