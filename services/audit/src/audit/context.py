"""What the HTTP layer needs besides a session: settings, keys and the partition keeper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from audit.chain.service import PartitionKeeper
from audit.checkpoints.signing import Keyring, Signer
from audit.config import AuditSettings, Settings

__all__ = ["AuditContext", "AuditDep", "build_signer"]


@dataclass
class AuditContext:
    settings: AuditSettings
    signer: Signer
    keyring: Keyring
    keeper: PartitionKeeper | None = None


def build_signer(settings: Settings) -> Signer:
    if settings.signing_key is not None:
        return Signer.from_seed(settings.signing_key.get_secret_value())
    return Signer.derived(settings.secret_key.get_secret_value())


def get_audit(request: Request) -> AuditContext:
    ctx: AuditContext = request.app.state.audit
    if ctx.keeper is None:
        ctx.keeper = PartitionKeeper(request.app.state.resources.session_factory)
    return ctx


AuditDep = Annotated[AuditContext, Depends(get_audit)]
