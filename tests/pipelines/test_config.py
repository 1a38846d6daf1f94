import pytest

from dataversion.errors import BadInputError
from pipelines.config import IngestConfig


def test_hash_is_stable_and_follows_every_rule():
    a, b = IngestConfig(), IngestConfig()
    assert a.hash == b.hash and len(a.hash) == 32
    assert IngestConfig.from_dict({"dedup": {"text_threshold": 0.9}}).hash != a.hash
    assert IngestConfig.from_dict({"text": {"min_chars": 5}}).hash != a.hash
    assert IngestConfig.from_dict(a.to_dict()).hash == a.hash


def test_bad_config_is_a_clear_error():
    with pytest.raises(BadInputError, match="multiple of bands"):
        IngestConfig.from_dict({"dedup": {"num_perm": 100, "bands": 16}})
    with pytest.raises(BadInputError, match="unknown ingest config keys"):
        IngestConfig.from_dict({"nope": 1})
    with pytest.raises(BadInputError, match="text_threshold"):
        IngestConfig.from_dict({"dedup": {"text_threshold": 1.5}})
