"""Label Studio's rectangles (percent of the image, top-left corner, rotation about it)
against the audit's boxes (corners in thumbnail pixels), without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.label_studio import (
    CONTROL,
    IMAGE,
    from_percent,
    label_config,
    region,
    to_percent,
)

WIDTH, HEIGHT = 384, 288


def test_a_box_goes_to_percent_of_the_image_and_comes_back_in_pixels() -> None:
    box = LabelledBox("star", 38.4, 28.8, 192.0, 288.0, 0.75)
    value = to_percent(box, WIDTH, HEIGHT)
    assert value == {"x": pytest.approx(10.0), "y": pytest.approx(10.0),
                     "width": pytest.approx(40.0), "height": pytest.approx(90.0),
                     "rotation": 0, "rectanglelabels": ["star"]}
    back = from_percent(value, WIDTH, HEIGHT, 0.75)
    assert back is not None
    assert back.label == "star" and back.score == 0.75
    assert (back.x1, back.y1, back.x2, back.y2) == pytest.approx((38.4, 28.8, 192.0, 288.0),
                                                                 abs=1e-9)


@pytest.mark.parametrize("x1, y1, x2, y2", [(0, 0, WIDTH, HEIGHT), (0.5, 1.25, 3.0, 2.5),
                                            (100.123, 7.7, 383.99, 287.01)])
def test_pixels_survive_the_round_trip(x1: float, y1: float, x2: float, y2: float) -> None:
    back = from_percent(to_percent(LabelledBox("ring", x1, y1, x2, y2), WIDTH, HEIGHT),
                        WIDTH, HEIGHT)
    assert back is not None
    assert (back.x1, back.y1, back.x2, back.y2) == pytest.approx((x1, y1, x2, y2), abs=1e-9)


def test_a_rotated_rectangle_is_read_as_the_upright_box_around_it() -> None:
    # 40 x 20 pixels at (100, 50), turned 90 degrees clockwise about its top-left corner:
    # it now hangs down-left of that corner, 20 wide and 40 tall
    value = {"x": 100 / WIDTH * 100, "y": 50 / HEIGHT * 100, "width": 40 / WIDTH * 100,
             "height": 20 / HEIGHT * 100, "rotation": 90, "rectanglelabels": ["cross"]}
    back = from_percent(value, WIDTH, HEIGHT)
    assert back is not None
    assert (back.x1, back.y1, back.x2, back.y2) == pytest.approx((80, 50, 100, 90), abs=1e-9)


def test_a_rectangle_without_a_label_is_no_box() -> None:
    assert from_percent({"x": 1, "y": 1, "width": 2, "height": 2, "rectanglelabels": []},
                        WIDTH, HEIGHT) is None


def test_a_region_names_the_config_and_the_image_size() -> None:
    result = region(LabelledBox("circle", 0, 0, 10, 10, 0.5), WIDTH, HEIGHT, "p0")
    assert result["from_name"] == CONTROL and result["to_name"] == IMAGE
    assert result["type"] == "rectanglelabels" and result["score"] == 0.5
    assert (result["original_width"], result["original_height"]) == (WIDTH, HEIGHT)
    assert "score" not in region(LabelledBox("circle", 0, 0, 10, 10), WIDTH, HEIGHT, "a0")


def test_the_config_escapes_class_names_and_lists_each_once() -> None:
    names = ["circle", 'a "quoted" <b> & c', "circle"]
    root = ET.fromstring(label_config(names))
    labels = root.find("RectangleLabels")
    assert labels is not None and labels.get("canRotate") == "false"
    assert [label.get("value") for label in labels] == ["circle", 'a "quoted" <b> & c']
