from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.recording_upstream import RecordingUpstream


@pytest.fixture(scope="module")
def recording() -> Iterator[RecordingUpstream]:
    """The upstream that records what reaches it, with its decoy (one per module)."""
    upstream = RecordingUpstream()
    yield upstream
    upstream.close()
