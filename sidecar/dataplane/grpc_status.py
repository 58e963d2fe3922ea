"""gRPC statuses as the request path records them.

Each status has the HTTP status Google's `google.rpc.Code` documents for it, so that a gRPC
exchange is a 2xx, 4xx or 5xx to everything that reads statuses (server errors are
always traced; only a success is analysed), and the 5xx ones are the catalog's
GRPC_SERVER_ERROR_CODES, which the SLOs count. The `code` label is the status's name.
"""

from __future__ import annotations

import grpc

_CODE = grpc.StatusCode
HTTP_EQUIVALENT: dict[grpc.StatusCode, int] = {
    _CODE.OK: 200, _CODE.CANCELLED: 499, _CODE.UNKNOWN: 500, _CODE.INVALID_ARGUMENT: 400,
    _CODE.DEADLINE_EXCEEDED: 504, _CODE.NOT_FOUND: 404, _CODE.ALREADY_EXISTS: 409,
    _CODE.PERMISSION_DENIED: 403, _CODE.RESOURCE_EXHAUSTED: 429,
    _CODE.FAILED_PRECONDITION: 400, _CODE.ABORTED: 409, _CODE.OUT_OF_RANGE: 400,
    _CODE.UNIMPLEMENTED: 501, _CODE.INTERNAL: 500, _CODE.UNAVAILABLE: 503,
    _CODE.DATA_LOSS: 500, _CODE.UNAUTHENTICATED: 401,
}


def number(code: grpc.StatusCode) -> int:
    """The status's number on the wire (`rpc.grpc.status_code`)."""
    return code.value[0]
