"""An erased record keeps its position and is skipped: every other sample keeps its position,
so its augmentation (seeded by seed, epoch and position) is the one it had before the
erasure. (The kept rows were zipped with the batch's unfiltered positions: every sample after
an erased one in its batch took its neighbour's seed.)"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.torch import SnapshotLoader  # noqa: E402


def draw(sample, rng):
    sample["draw"] = float(torch.rand((), generator=rng))
    return sample


def _draws(url, workers):
    out = {}
    for b in SnapshotLoader(url, batch_size=8, num_workers=workers, shuffle=True, seed=3, transform=draw):
        out.update(zip(b["record_id"], b["draw"].tolist()))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_samples_keep_their_augmentation_after_an_erasure(tmp_path, workers):
    url = f"file://{tmp_path}/repo"
    repo = Repo.init(url)
    repo.commit(make_text_records([f"record number {i} of the set" for i in range(40)]), message="40")
    before = _draws(url, workers)
    victims = sorted(before)[5:8]  # a few, somewhere inside batches
    repo.erase(victims, reason="deletion request")
    after = _draws(url, workers)
    assert set(after) == set(before) - set(victims)
    assert after == {k: v for k, v in before.items() if k not in victims}
