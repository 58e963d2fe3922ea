from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import SidecarProcess, start_sidecar, start_upstream

READ_TIMEOUT = 1.5
MAX_BODY = 16 * 1024 * 1024


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--dist loadgroup` sends the tests of one `xdist_group` to one worker by a suffix
    on their node ids; pytest-xdist 3.8 writes it to `item._nodeid`, which pytest 9 no
    longer reads (ids come from `item._id`), so every group was split over the workers
    and each built its module's expensive fixture (the canary lab twice). Written here
    the way pytest 9 keeps ids; a no-op once xdist does it itself."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = coerce_node_id(item.nodeid + suffix)


@pytest.fixture(scope="session")
def upstream_port() -> Iterator[int]:
    process, port = start_upstream()
    yield port
    process.terminate()


@pytest.fixture(scope="session")
def sidecar(upstream_port: int) -> Iterator[SidecarProcess]:
    """One sidecar shared by the tests that only read its behaviour."""
    process = start_sidecar(
        f"http://127.0.0.1:{upstream_port}",
        "--read-timeout", str(READ_TIMEOUT), "--max-body-bytes", str(MAX_BODY),
    )
    yield process
    process.stop()


@pytest.fixture(scope="session", autouse=True)
def no_cloud_metadata():
    """No test's object-store client asks an instance-metadata service for credentials:
    obstore then asks a closed loopback port (sidecar/samples/bucket.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server for the session's object-store tests (each uses its own bucket)."""
    from tests.support.moto_s3 import S3Server

    server = S3Server().start()
    with pytest.MonkeyPatch.context() as patch:  # no test's client looks for a cloud
        for name, value in server.env().items():
            patch.setenv(name, value)
        yield server
    server.stop()


@pytest.fixture(scope="session")
def label_studio():
    """One Label Studio for the session's labelling tests (each makes its own projects):
    it takes seconds to start from the installed template, minutes without."""
    from tests.support.label_studio import LabelStudioServer

    server = LabelStudioServer().start()
    print(f"label-studio answered after {server.start_seconds:.1f}s")
    yield server
    server.stop()
