from __future__ import annotations

from lookout.sidecar.pipeline.field_path import walk

DOCUMENT = {"inputs": [{"data": "x"}], "result": {"objects": [1, 2]}, "0": "key"}


def test_brackets_dots_and_numbers() -> None:
    assert walk(DOCUMENT, "inputs[0].data") == "x"
    assert walk(DOCUMENT, "inputs.0.data") == "x"
    assert walk(DOCUMENT, "result.objects") == [1, 2]
    assert walk(DOCUMENT, "0") == "key"  # a numeric key of an object


def test_missing_steps_give_none() -> None:
    assert walk(DOCUMENT, "inputs[3].data") is None
    assert walk(DOCUMENT, "result[0]") is None
    assert walk(DOCUMENT, "nothing.here") is None
    assert walk([1], "a") is None
