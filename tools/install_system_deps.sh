#!/usr/bin/env bash
# Installs the Debian packages the tests need (a real Prometheus, promtool, amtool,
# nginx, the peer the data port's refusals are compared with, and Chromium with its
# driver for the gallery's browser tests, tmux for the demo's terminal test).
# Under CI=true a tool that cannot be installed fails the run; elsewhere the tests
# that need it skip with a reason.
set -u
needed=()
command -v prometheus >/dev/null || needed+=(prometheus)
command -v promtool >/dev/null || needed+=(prometheus)
command -v amtool >/dev/null || needed+=(prometheus-alertmanager)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || needed+=(nginx)
command -v tmux >/dev/null || needed+=(tmux)
# the tap: Envoy's dynamic module in C (gcc, zlib for compressed gRPC messages' names)
command -v gcc >/dev/null || needed+=(gcc libc6-dev)
command -v make >/dev/null || needed+=(make)
[ -f /usr/include/zlib.h ] || needed+=(zlib1g-dev)  # the demo's live view, read back in a test
command -v chromium >/dev/null || needed+=(chromium)
command -v chromedriver >/dev/null || needed+=(chromium-driver)
# a font for the screenshots' text (chromium only recommends one)
[ -d /usr/share/fonts/truetype/liberation ] || [ -d /usr/share/fonts/truetype/dejavu ] \
    || needed+=(fonts-liberation)
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
packages=$(printf '%s\n' "${needed[@]}" | sort -u | tr '\n' ' ')
echo "installing Debian packages: $packages"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null; then
        exit 0
    fi
fi
if [ "${CI:-}" = "true" ]; then
    echo "error: could not install $packages, which the tests need under CI=true" >&2
    exit 1
fi
echo "warning: could not install $packages; tests that need them will be skipped" >&2
exit 0
