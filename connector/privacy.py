"""Config models of the accountability records: controller, processors, purposes, retention.

These feed the Art. 30 processing register, the Art. 15 facts of access reports, and the
compliance checks of ``klantsync check``. All optional, so a config without them still syncs;
``check`` reports what is missing as compliance gaps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from connector.settings import ProcessorSettings, StrictModel

__all__ = [
    "ControllerSettings",
    "FlowPrivacy",
    "PrivacySettings",
    "ProcessorSettings",
    "RetentionSettings",
]

LegalBasis = Literal[
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
]


class ControllerSettings(StrictModel):
    """``[controller]``: the organisation responsible for the processing (the agency's client)."""

    name: str
    address: str = ""
    kvk: str = ""  # Kamer van Koophandel number
    contact: str = ""  # who data subjects and the authority contact
    email: str = ""
    dpo: str = ""  # data protection officer, if one is appointed


class FlowPrivacy(StrictModel):
    """Per-flow purposes, legal basis and retention (``[flows.privacy]`` in a ``[[flows]]``)."""

    purposes: list[str] = Field(default_factory=list)
    legal_basis: LegalBasis | None = None
    retention: str = ""  # e.g. "2 years after the last order"


class RetentionSettings(StrictModel):
    """``[retention]``: how long the connector keeps what it holds itself, in days."""

    dead_letters_days: int = Field(default=30, ge=1)
    manifests_days: int = Field(default=30, ge=1)
    access_bundles_days: int = Field(default=30, ge=1)
    audit_days: int = Field(default=2555, ge=365)  # seven years, the Dutch fiscal period
    # The daemon's finished jobs (kind, times, outcome counts; their sealed parameters are
    # dropped when they finish) and the delivery ids webhooks are checked against for
    # replays: vendors retry a delivery for up to two days (Shopify: 48 hours), so the ids
    # are kept at least three.
    jobs_days: int = Field(default=30, ge=1)
    webhook_ids_days: int = Field(default=7, ge=3)
    # The flows' run history (times, outcome, counts): a flow "every 1m" adds half a million
    # rows a year. Each flow's latest run and latest successful run are always kept.
    runs_days: int = Field(default=90, ge=1)


class PrivacySettings(StrictModel):
    """``[privacy]``: who the data is about and the agency's own role."""

    data_subjects: list[str] = Field(default_factory=lambda: ["customers"])
    agency: str = ""  # the agency that runs the connector as processor (Art. 30(2))
    agency_contact: str = ""
