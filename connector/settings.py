"""Settings shared by every system, which each adapter's own settings model extends.

Kept apart from :mod:`connector.config` so adapters can import it without pulling in the
registry (which imports the adapters).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["RateLimitSettings", "StrictModel", "SystemSettings", "WebhookSettings"]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitSettings(StrictModel):
    """``{ requests = 190, per_seconds = 10 }``: at most that many calls per rolling window."""

    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)


class WebhookSettings(StrictModel):
    """Inbound webhook verification for one system."""

    secret: SecretStr


class SystemSettings(StrictModel):
    """What every ``[systems.<name>]`` table holds; adapters add their own keys.

    Credentials arrive here already resolved from their ``env:``/``file:`` references.
    """

    required_credentials: ClassVar[tuple[str, ...]] = ()

    adapter: str
    base_url: str
    mapping: Path
    ca_bundle: Path | None = None
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    rate_limit: RateLimitSettings | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)
    webhooks: WebhookSettings | None = None

    def credential(self, name: str) -> str:
        """The clear value of one credential (for building auth headers only)."""
        return self.credentials[name].get_secret_value()
