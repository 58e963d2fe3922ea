#!/usr/bin/env bash
# Installs the object-store servers the tests start on loopback, each apart from the
# sidecar's own environment: moto's S3 server (moto[server]) in its own virtualenv,
# .venv-moto (its dependencies, boto3 and Flask among them, are none of the sidecar's),
# and Microsoft's Azure Storage emulator, Azurite, from npm into .azurite.
# Under CI=true a failed install fails the run; elsewhere the tests that need the
# missing server skip with a reason.
set -u
PYTHON=${PYTHON:-python3}
failed=()
if [ ! -x .venv-moto/bin/moto_server ]; then
    "$PYTHON" -m venv .venv-moto && .venv-moto/bin/python -m pip install -q "moto[server]>=5.1,<6" \
        || failed+=("moto[server] (into .venv-moto)")
fi
if [ ! -x .azurite/node_modules/.bin/azurite-blob ]; then
    command -v npm >/dev/null && npm install --prefix .azurite --no-audit --no-fund --silent \
        "azurite@>=3.30 <4" || failed+=("azurite (npm, into .azurite)")
fi
if [ ${#failed[@]} -eq 0 ]; then
    exit 0
fi
if [ "${CI:-}" = "true" ]; then
    echo "error: could not install ${failed[*]}, which the tests need under CI=true" >&2
    exit 1
fi
echo "warning: could not install ${failed[*]}; the tests that need them will be skipped" >&2
exit 0
