"""Audited samples in the gallery: marked in the list, and their annotators' boxes drawn
as a third style (own colour, toggle, legend entry, table) on the sample's page; read
from a real store's audit records, and served by a real sidecar (no browser)."""

from __future__ import annotations

import random
import re
import urllib.parse

import numpy as np
import pytest

from lookout.sidecar.samples.audit_marks import AuditMark, AuditMarkCache, audit_marks
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.store import Page, SampleFile, SampleStore
from lookout.sidecar.samples.ui_pages import gallery_page, sample_page
from tests.support.processes import request, start_sidecar
from tests.support.sample_writer import jpeg, sample

TOKEN = "audit-gallery-token-5c1"
T0 = 1_800_000_000.0


def two_samples():
    rng, chooser = np.random.default_rng(7), random.Random(7)
    return [sample(rng, chooser, T0 + n) for n in range(2)]


def record(audited: str, other: str | None = None, *, labelled: bool = True) -> dict:
    done = {"batch_id": "20270115-000000-abcdef", "created": T0, "model": "m",
            "random_ids": [audited], "top_up_ids": [other] if other else [],
            "status": "estimated" if labelled else "drawn"}
    if labelled:
        done["annotations"] = {audited: [["car", 3.0, 4.0, 50.0, 60.0]],
                               **({other: []} if other else {})}
    return done


def test_marks_name_the_batch_and_keep_the_boxes_the_newest_record_winning() -> None:
    older = {**record("a", "b", labelled=False), "created": T0 - 10, "batch_id": "old"}
    marks = audit_marks([record("a", "b"), older])
    assert marks["a"] == AuditMark("20270115-000000-abcdef", True,
                                   (("car", 3.0, 4.0, 50.0, 60.0),))
    assert marks["b"] == AuditMark("20270115-000000-abcdef", True, ())
    assert audit_marks([older])["a"] == AuditMark("old", False)


def test_a_failing_read_leaves_the_marks_as_they_were_until_the_next_read() -> None:
    now = [0.0]
    reads = iter([[record("a")], OSError("bucket down")])

    def read():
        result = next(reads)
        if isinstance(result, Exception):
            raise result
        return result

    cache = AuditMarkCache(read, clock=lambda: now[0])
    assert set(cache.marks()) == {"a"}
    now[0] = 61.0
    assert set(cache.marks()) == {"a"}


def test_the_list_marks_audited_cards_and_draws_their_annotators_boxes() -> None:
    audited, plain = two_samples()
    marks = audit_marks([record(audited.id)])
    html = gallery_page(Page([audited, plain], None), {}, 2, marks)
    cards = re.findall(r'<a class="card[^"]*".*?</a>', html)
    assert len(cards) == 2
    marked = next(c for c in cards if audited.id in c)
    unmarked = next(c for c in cards if plain.id in c)
    assert 'class="card audited"' in marked and '<dd class="audit"' in marked
    assert '<g class="box audit"><title>audit: car</title><rect x="3.0" y="4.0" ' \
           'width="47.0" height="56.0"/>' in marked
    assert "audited" not in unmarked and "box audit" not in unmarked
    assert '<span class="key audit">' in html
    assert '<span class="key audit">' not in gallery_page(Page([plain], None), {}, 1)


@pytest.mark.parametrize("labelled", [True, False])
def test_a_sample_page_draws_the_annotators_boxes_with_their_toggle_and_table(
        labelled: bool) -> None:
    audited, plain = two_samples()
    mark = audit_marks([record(audited.id, labelled=labelled)])[audited.id]
    html = sample_page(audited, "/ui/samples", None, {}, "", mark)
    assert 'id="show-audit"' in html and '<span class="key audit">' in html
    assert '<section class="detections audit">' in html
    if labelled:
        assert html.count('class="box audit"') == 1 and '<g class="label audit">' in html
        assert "<td>car</td><td>3, 4, 50, 60</td>" in html
    else:
        assert "box audit" not in html and "not labelled yet" in html
    bare = sample_page(plain, "/ui/samples", None, {}, "")
    assert "show-audit" not in bare and "key audit" not in bare


def test_a_sidecars_gallery_shows_its_stores_audits(upstream_port: int, tmp_path) -> None:
    directory = tmp_path / "samples"
    store = SampleStore(directory)
    audited, plain = two_samples()
    rng = np.random.default_rng(1)
    for each in (audited, plain):
        store.add(each, SampleFile(jpeg(rng), "jpg"))
    AuditRecords(store).write(record(audited.id))
    store.close()
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--sample-dir",
                            str(directory), "--admin-token", TOKEN)
    try:
        signed = request(sidecar.admin_port, "POST", "/ui/login",
                         body=urllib.parse.urlencode({"token": TOKEN}).encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        cookie = signed.headers["Set-Cookie"].split(";", 1)[0]
        listed = request(sidecar.admin_port, "GET", "/ui/samples",
                         headers={"Cookie": cookie})
        assert listed.status == 200
        page = listed.body.decode()
        assert page.count('class="card audited"') == 1 and plain.id in page
        shown = request(sidecar.admin_port, "GET", f"/ui/samples/{audited.id}",
                        headers={"Cookie": cookie}).body.decode()
        assert 'id="show-audit"' in shown and 'class="box audit"' in shown
        css = request(sidecar.admin_port, "GET", "/ui/static/gallery.css",
                      headers={"Cookie": cookie}).body.decode()
        assert ".overlay .box.audit rect" in css and "#show-audit:not(:checked)" in css
    finally:
        sidecar.stop()
