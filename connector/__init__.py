"""klantsync: a GDPR-aware customer-data sync daemon. The core; nothing here knows a vendor."""

__version__ = "0.1.0"
