"""SECURITY.md's table of what the data port refuses beside nginx: every shape of
tests/security/corpus.py sent to nginx and to lookout in front of one recording
upstream, grouped by the pair of outcomes.

    PYTHONPATH=. python tools/refusal_table.py
"""

from __future__ import annotations

from collections import defaultdict

from tests.security.corpus import SHAPES, Shape
from tests.security.peers import send_raw
from tests.support.nginx import beside_nginx
from tests.support.recording_upstream import RecordingUpstream

MAX_BODY = 16 * 1024 * 1024


def outcome(shape: Shape, port: int, recording: RecordingUpstream) -> str:
    recording.take()
    answer = send_raw(port, shape.render(f"127.0.0.1:{port}", recording.decoy_port),
                      shape.responses, timeout=4, head_request=shape.name == "method-head")
    if recording.take():
        return "forwards"
    if not answer.statuses:
        return "closes" if answer.closed else "no answer"
    named = [value for name, value in answer.headers[0] if name.lower() == "x-lookout-error"]
    return "/".join(map(str, answer.statuses)) + (f" `{named[0]}`" if named else "")


def main() -> None:
    recording = RecordingUpstream()
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    try:
        with beside_nginx(recording.port, MAX_BODY, "--client-head-timeout", "3") as pair:
            nginx, sidecar = pair
            for shape in SHAPES:
                groups[(outcome(shape, nginx.port, recording),
                        outcome(shape, sidecar.port, recording))].append(shape.name)
    finally:
        recording.close()
    for (by_nginx, by_lookout), names in sorted(
            groups.items(), key=lambda item: (item[0][0] != item[0][1], item[0])):
        print(f"| {', '.join(f'`{name}`' for name in names)} | {by_nginx} | {by_lookout} |")


if __name__ == "__main__":
    main()
