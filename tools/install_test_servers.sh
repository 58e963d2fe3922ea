#!/usr/bin/env bash
# Installs the servers the tests start on loopback, each apart from the sidecar's own
# environment: moto's S3 server (moto[server]) in its own virtualenv, .venv-moto (its
# dependencies, boto3 and Flask among them, are none of the sidecar's), Microsoft's Azure
# Storage emulator, Azurite, from npm into .azurite, and the labelling tool Label Studio
# in .venv-labelstudio (Django and its pins would clash with ours), with an empty database
# migrated once here (.venv-labelstudio/lookout-template): a fresh one takes the server
# a minute and a half to migrate, a copy of this one starts in seconds
# (tests/support/label_studio.py).
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
LABEL_STUDIO="label-studio==1.23.2"
if [ ! -x .venv-labelstudio/bin/label-studio ]; then
    "$PYTHON" -m venv .venv-labelstudio && .venv-labelstudio/bin/python -m pip install -q \
        "$LABEL_STUDIO" || failed+=("$LABEL_STUDIO (into .venv-labelstudio)")
fi
template=.venv-labelstudio/lookout-template
if [ -x .venv-labelstudio/bin/label-studio ] && [ ! -f "$template/label_studio.sqlite3" ]; then
    # any command migrates the database first; nothing here may reach the network
    rm -rf "$template.tmp" && mkdir -p "$template.tmp" && (cd "$template.tmp" \
        && env LABEL_STUDIO_BASE_DATA_DIR="$PWD" SENTRY_DSN= FRONTEND_SENTRY_DSN= \
            COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false \
            HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
            ../bin/label-studio version >../lookout-template.log 2>&1) \
        && mv "$template.tmp" "$template" || failed+=("the Label Studio template database")
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
