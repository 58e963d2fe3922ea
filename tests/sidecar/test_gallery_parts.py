"""The gallery's parts that need no browser: session cookies and one-time links, the
placement of box labels, the new filters and the trace link template."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookout.sidecar.config import parse_trace_url_template
from lookout.sidecar.samples.admin_token import AdminToken
from lookout.sidecar.samples.door import Door
from lookout.sidecar.samples.query import QueryError, SampleQuery
from lookout.sidecar.samples.ui import percentile_of, trace_link
from lookout.sidecar.samples.ui_overlay import place_labels
from lookout.sidecar.samples.ui_session import (
    LINK_SECONDS,
    SESSION_SECONDS,
    Sessions,
    gallery_path,
)

NOW = 1_800_000_000.0


def test_a_session_is_good_until_it_expires_and_only_for_its_token() -> None:
    sessions = Sessions("token-a")
    cookie, lifetime = sessions.issue(NOW)
    assert lifetime == SESSION_SECONDS and "token-a" not in cookie
    assert sessions.valid(cookie, NOW + SESSION_SECONDS - 1)
    assert not sessions.valid(cookie, NOW + SESSION_SECONDS)
    assert not Sessions("token-b").valid(cookie, NOW)  # rotated: every cookie is void
    expires, nonce, signature = cookie.split(".")
    assert not sessions.valid(f"{int(expires) + 86400}.{nonce}.{signature}", NOW)
    for forged in ("", "1.2", "x.y.z", f"{expires}.{nonce}.", "é.é.é"):
        assert not sessions.valid(forged, NOW)


def test_a_login_link_works_once_and_not_as_a_session() -> None:
    sessions = Sessions("token-a")
    code = sessions.link_code(NOW)
    assert not sessions.valid(code, NOW)  # signed for another purpose
    assert sessions.redeem(code, NOW) and not sessions.redeem(code, NOW + 1)
    late = sessions.link_code(NOW)
    assert not sessions.redeem(late, NOW + LINK_SECONDS)
    assert not Door(AdminToken("")).matches("") and Door(AdminToken("t")).matches(" t\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20),
                          st.floats(0, 300), st.floats(0, 200),
                          st.floats(1, 100), st.floats(1, 100)), max_size=25))
def test_placed_labels_never_overlap_and_stay_inside(boxes) -> None:
    size = (320, 240)
    given_boxes = [(text, [x, y, x + w, y + h]) for text, x, y, w, h in boxes]
    spots = [s for s in place_labels(given_boxes, size, 10.0) if s is not None]
    for index, spot in enumerate(spots):
        assert spot.y >= 0 and spot.y + spot.height <= size[1]
        assert all(not spot.overlaps(other) for other in spots[index + 1:])


def test_status_and_agreement_filters() -> None:
    query = SampleQuery.from_params({"status": "503", "agreement_below": "0.5"})
    assert query.status == 503 and query.agreement_below == 0.5
    for params, message in (({"status": "5xx"}, "status"), ({"status": "2000"}, "status"),
                            ({"agreement_below": "nan"}, "agreement_below"),
                            ({"agreement_below": "1.5"}, "agreement_below")):
        with pytest.raises(QueryError, match=message):
            SampleQuery.from_params(params)


def test_the_trace_link_template_is_checked_at_start_up() -> None:
    template = parse_trace_url_template("https://jaeger.example/trace/{trace_id}")
    assert trace_link(template, "ab/c") == "https://jaeger.example/trace/ab%2Fc"
    assert trace_link("", "abc") is None and trace_link(template, None) is None
    for bad in ("https://jaeger.example/trace/", "javascript:alert(1)//{trace_id}",
                "https://x/{trace_id}/{span_id}", "/relative/{trace_id}"):
        with pytest.raises(ValueError):
            parse_trace_url_template(bad)


def test_percentiles_rank_a_value_among_the_reference() -> None:
    ordered = [1.0, 2.0, 3.0, 4.0]
    assert percentile_of(0.0, ordered) == 0 and percentile_of(9.0, ordered) == 100
    assert percentile_of(2.0, ordered) == pytest.approx(37.5)  # ties count halfway


def test_a_dashboards_multi_value_variables_filter_as_lists(tmp_path) -> None:
    import random as random_module

    import numpy as np

    from lookout.sidecar.samples.store import SampleFile, SampleStore
    from tests.support.sample_writer import jpeg, sample

    store = SampleStore(tmp_path / "store")
    rng, chooser = np.random.default_rng(1), random_module.Random(1)
    for index in range(12):
        store.add(sample(rng, chooser, NOW + index), SampleFile(jpeg(rng), "jpg"))
    everything = store.query(SampleQuery(limit=100)).samples
    both = store.query(SampleQuery.from_params({"version": "v1,v2", "limit": "100"})).samples
    every = store.query(SampleQuery.from_params({"version": ".*", "model": ".*",
                                                 "limit": "100"})).samples
    one = store.query(SampleQuery.from_params({"version": "v1", "limit": "100"})).samples
    assert len(both) == len(every) == len(everything) == 12
    assert 0 < len(one) < 12 and all(s.version == "v1" for s in one)


def test_samples_list_fits_its_terminal_and_never_cuts_an_id(tmp_path) -> None:
    import os
    import random as random_module
    import subprocess
    import sys

    import numpy as np

    from lookout.sidecar.samples.store import SampleFile, SampleStore
    from tests.support.processes import REPO
    from tests.support.sample_writer import jpeg, sample

    store = SampleStore(tmp_path / "store")
    rng, chooser = np.random.default_rng(2), random_module.Random(2)
    ids = [store.add(sample(rng, chooser, NOW + i), SampleFile(jpeg(rng), "jpg")).id
           for i in range(3)]

    def listing(columns: int, *extra: str) -> list[str]:
        env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
        return subprocess.run([sys.executable, "-m", "lookout", "samples", "list", "--store",
                               str(tmp_path / "store"), *extra], capture_output=True,
                              text=True, env=env, cwd=REPO, check=True).stdout.splitlines()

    narrow = listing(80)
    assert all(len(line) <= 80 for line in narrow)
    assert all(any(sample_id in line for line in narrow) for sample_id in ids)
    assert "…" not in "".join(narrow) and "trace id" not in narrow[1]
    assert any("--wide shows all" in line for line in narrow)
    wide = listing(80, "--wide")
    header = next(line for line in wide if "id" in line and "time (UTC)" in line)
    assert "trace id" in header and "agreement" in header
    roomy = listing(200)
    assert "trace id" in next(line for line in roomy if "time (UTC)" in line)


def test_after_sign_in_the_browser_goes_only_to_the_gallery() -> None:
    assert gallery_path("/ui/compare?baseline=v1") == "/ui/compare?baseline=v1"
    for elsewhere in ("//evil.example/ui/", "https://evil.example/ui/", "/ui\\..\\x",
                      "/samples", "", "/ui/\\evil.example"):
        assert gallery_path(elsewhere) == "/ui/samples"
