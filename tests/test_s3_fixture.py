"""The S3 test server itself: a whole suite's buckets must fit on it, on any disk.

Each bucket is a SeaweedFS collection with its own volumes, and the server's volume slots are
counted from the free disk (so their count moves with whatever else writes to that disk, and
the test counts the bucket's own volumes). With seven volumes a bucket and every bucket kept, a CI machine
with less free disk than a laptop ran out of slots and every S3 write near the end of the run
answered 500.
"""

from __future__ import annotations

import io

import pytest

pytestmark = pytest.mark.s3


def test_a_bucket_that_holds_objects_takes_one_volume_and_gives_it_back(s3_server):
    others = {b.name for b in s3_server.client().list_buckets()}
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(bucket, "a/b", io.BytesIO(b"data"), 4)
    assert s3_server.bucket_volumes(bucket) == 1

    s3_server.drop_buckets_except(others)
    assert s3_server.bucket_volumes(bucket) == 0
    assert {b.name for b in s3_server.client().list_buckets()} == others
