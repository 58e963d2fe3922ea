"""Discovered label slots come back: junk model names the server answered take the
slots, the cap counts what it turned away, the idle names give their slots up, and a
real model added later gets its own label, in the RED counters and in the analyses
alike. Real sidecar, real upstream, polled conditions."""

from __future__ import annotations

import re

from lookout.slo import catalog
from tests.support.processes import request, start_sidecar, start_upstream, wait_until

JUNK = 300
MAX_MODELS = 16
REQUESTS = catalog.REQUESTS.sample_name


def _models(text: str) -> set[str]:
    return set(re.findall(rf'^{REQUESTS}{{[^}}]*model="([^"]+)"', text, re.MULTILINE))


def test_junk_names_give_their_slots_back_and_a_real_model_gets_a_label() -> None:
    upstream, port = start_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--analysis-workers", "1",
                            "--discover-models", "true", "--max-models", str(MAX_MODELS),
                            "--model-label-idle-seconds", "6")  # outlasts the flood when busy
    try:
        for index in range(JUNK):
            for _ in range(2):  # more than one 2xx: each earns a label
                assert request(sidecar.port, "POST", f"/v2/models/junk-{index}/infer",
                               body=b"{}").status == 200
        # the lookout process decides labels from the tap's counters once a second
        wait_until(lambda: sidecar.metric(catalog.MODEL_LABELS_REFUSED.sample_name) > 0, 10,
                   "the names over the cap to be refused", interval=0.2)
        labelled = _models(sidecar.metrics_text())
        assert len(labelled - {"other"}) <= MAX_MODELS
        # one answer is not enough for a label
        assert request(sidecar.port, "POST", "/v2/models/once/infer", body=b"{}").status == 200
        wait_until(lambda: not any(m.startswith("junk-") for m in
                                   _models(sidecar.metrics_text())),
                   60, "the idle junk labels to be released")
        assert "once" not in _models(sidecar.metrics_text())
        observed = catalog.OBSERVATIONS.sample_name

        def real_model_analysed() -> bool:
            assert request(sidecar.port, "POST", "/v2/models/real-model/infer",
                           body=b"{}").status == 200
            return sidecar.metric(observed, model="real-model") > 0

        wait_until(real_model_analysed, 30, "the real model's own label", interval=0.2)
        assert sidecar.metric(REQUESTS, model="real-model", code="200") >= 2
        assert sidecar.process.alive()
    finally:
        sidecar.stop()
        upstream.terminate()
