#!/usr/bin/env bash
# promtool and prometheus, from Debian's `prometheus` package, for the alert rules' tests
# (tests/deploy) and the deployment checks: installed when missing (`make test`, `.ci/run`).
# Needs apt and root (or password-less sudo); elsewhere it says what to install.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "promtool and prometheus are missing: install Prometheus (its package, or brew install prometheus)" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "promtool and prometheus are missing: sudo apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
fi
echo "installing Debian's prometheus package (promtool and prometheus, for the alert tests)"
log=$(mktemp)
policy=/usr/sbin/policy-rc.d
made_policy=""
cleanup() {
    rm -f "$log"
    if [ -n "$made_policy" ]; then "${sudo[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT
# the package's own service must not start: the tests run their own, on 127.0.0.1
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    made_policy=1
fi
install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends prometheus >"$log" 2>&1
}
if ! install; then
    # the package lists may be missing or stale
    "${sudo[@]}" apt-get update -q >>"$log" 2>&1 && install || {
        cat "$log" >&2
        echo "failed: apt-get install prometheus" >&2
        exit 1
    }
fi
command -v promtool >/dev/null && command -v prometheus >/dev/null
