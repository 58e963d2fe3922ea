"""Why a body could not be understood: a closed set, used as the `reason` label."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    NO_IMAGE = "no_image"
    UNDECODABLE_IMAGE = "undecodable_image"
    TRUNCATED_IMAGE = "truncated_image"
    BAD_JSON = "bad_json"
    BAD_MULTIPART = "bad_multipart"
    BAD_KSERVE = "bad_kserve"
    BAD_GRPC = "bad_grpc"  # a gRPC message that is not the V2 protobuf it should be
    BAD_TENSOR = "bad_tensor"
    UNRECOGNIZED_RESPONSE = "unrecognized_response"
    BAD_DETECTION = "bad_detection"
    RESPONSE_TOO_LARGE = "response_too_large"
    REQUEST_TOO_LARGE = "request_too_large"
    OVER_BUDGET = "over_budget"  # estimated to cost more than analysis_budget seconds
    DECOMPRESSED_TOO_LARGE = "decompressed_too_large"  # a compressed body past the bound
    BAD_ENCODING = "bad_encoding"  # a compressed body that does not inflate
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    AMBIGUOUS_BOXES = "ambiguous_boxes"  # pixels or normalised units: cannot tell


class ParseFailure(Exception):
    """A request or response body the analysis could not use. Counted, never raised
    into the request path."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
