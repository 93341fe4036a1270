"""Who may have jobs run: the tenants' directory as the workers see it (a port).

Producers may publish straight to Kafka; a record naming a tenant the deployment does not know,
or one an operator disabled, ends ``failed`` (``unknown_tenant`` / ``tenant_disabled``) without
being fetched or charged. The composition root hands the worker an implementation backed by
PostgreSQL (``connectors.tenant_directory``); without one every tenant is taken as active.
"""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["TenantDirectory", "TenantState"]

TenantState = Literal["active", "disabled", "unknown"]


class TenantDirectory(Protocol):
    async def state(self, tenant: str) -> TenantState:
        """The tenant's state; "active" when it cannot be known right now (the database is
        away): jobs keep running, and are charged when they end."""
        ...
