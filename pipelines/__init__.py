"""Ingestion pipelines (Apache Beam), the scheduled runner and feature computation.

Beam is imported only inside the functions that run a pipeline, so `dataversion --help`
does not pay for it.
"""

import logging


class _DropBeamImportNoise(logging.Filter):
    """Beam logs a warning about optional Google Cloud clients on import; we do not use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_DropBeamImportNoise())
