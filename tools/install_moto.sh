#!/usr/bin/env bash
# Installs moto's S3 server (moto[server]) into its own virtualenv, .venv-moto: the
# object-store tests start it on loopback, and its dependencies (boto3, Flask...) are
# none of the sidecar's. Under CI=true a failed install fails the run; elsewhere the
# tests that need it skip with a reason.
set -u
PYTHON=${PYTHON:-python3}
VENV=.venv-moto
if [ -x "$VENV/bin/moto_server" ]; then
    exit 0
fi
if "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q "moto[server]>=5.1,<6"; then
    exit 0
fi
if [ "${CI:-}" = "true" ]; then
    echo "error: could not install moto[server] into $VENV, which the tests need under CI=true" >&2
    exit 1
fi
echo "warning: could not install moto[server]; the object-store tests will be skipped" >&2
exit 0
