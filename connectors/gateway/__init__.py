"""The HTTP ingest gateway: jobs in (intake, the account's limits), jobs and their formats out,
usage, the generated OpenAPI document."""

from connectors.gateway.server import Gateway

__all__ = ["Gateway"]
