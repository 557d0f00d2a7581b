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
    # Art. 27: the representative in the Union of a controller established outside it, who
    # must be named in both Art. 30 records; empty where none is needed.
    representative: str = ""


class FlowPrivacy(StrictModel):
    """Per-flow purposes, legal basis and retention (``[flows.privacy]`` in a ``[[flows]]``)."""

    purposes: list[str] = Field(default_factory=list)
    legal_basis: LegalBasis | None = None
    retention: str = ""  # e.g. "2 years after the last order"


#: The longest period any ``[retention]`` key takes: a hundred years. Each is subtracted from
#: today to find what is due, and a "for ever" written as 999999 days passed ``check`` and
#: then failed every sweep, so nothing at all was purged again.
MAX_DAYS = 36_500


class RetentionSettings(StrictModel):
    """``[retention]``: how long the connector keeps what it holds itself, in days."""

    dead_letters_days: int = Field(default=30, ge=1, le=MAX_DAYS)
    manifests_days: int = Field(default=30, ge=1, le=MAX_DAYS)
    access_bundles_days: int = Field(default=30, ge=1, le=MAX_DAYS)
    # Seven years by default, the Dutch fiscal period.
    audit_days: int = Field(default=2555, ge=365, le=MAX_DAYS)
    # The daemon's finished jobs (kind, times, outcome counts; their sealed parameters are
    # dropped when they finish) and the delivery ids webhooks are checked against for
    # replays: vendors retry a delivery for up to two days (Shopify: 48 hours), so the ids
    # are kept at least three.
    jobs_days: int = Field(default=30, ge=1, le=MAX_DAYS)
    webhook_ids_days: int = Field(default=7, ge=3, le=MAX_DAYS)
    # The flows' run history (times, outcome, counts): a flow "every 1m" adds half a million
    # rows a year. Each flow's latest run and latest successful run are always kept.
    runs_days: int = Field(default=90, ge=1, le=MAX_DAYS)
    # A store a restore replaced, kept beside the restored one (klantsync.db.replaced-<time>)
    # in case the restore was the mistake: it holds everything the store held, sealed, and
    # no erasure reaches into it, so it goes once this has passed.
    replaced_stores_days: int = Field(default=30, ge=1, le=MAX_DAYS)


class PrivacySettings(StrictModel):
    """``[privacy]``: who the data is about and the agency's own role."""

    data_subjects: list[str] = Field(default_factory=lambda: ["customers"])
    agency: str = ""  # the agency that runs the connector as processor (Art. 30(2))
    agency_contact: str = ""
    # Art. 30(2)(a): the processor's record names its own data protection officer and, for
    # an agency established outside the Union, its representative (Art. 27), where it has one.
    agency_dpo: str = ""
    agency_representative: str = ""
    # Art. 15(1)(h): what an access report says of automated decision-making and profiling;
    # empty, that there is none in this processing.
    automated_decisions: str = ""
