"""dataversion: clean, deduplicated, versioned training datasets.

The core (object model, stores, repository operations, CLI) imports without Beam, torch or
Feast. `dataversion.torch` (loader), `pipelines` (Beam ingestion) and `feature_repo`
(Feast) are optional extras.
"""

from .errors import (
    AmbiguousRefError,
    BadInputError,
    ConflictError,
    CorruptObjectError,
    DataversionError,
    NotFoundError,
    StoreError,
)
from .objects import Commit, RecordSummary, ShardRef
from .packing import Packing
from .records import RECORD_SCHEMA, make_binary_records, make_text_records
from .repo import CommitResult, Repo

__version__ = "0.1.0"

__all__ = [
    "Repo",
    "CommitResult",
    "Commit",
    "Packing",
    "RecordSummary",
    "ShardRef",
    "RECORD_SCHEMA",
    "make_text_records",
    "make_binary_records",
    "DataversionError",
    "NotFoundError",
    "AmbiguousRefError",
    "ConflictError",
    "CorruptObjectError",
    "BadInputError",
    "StoreError",
    "__version__",
]
