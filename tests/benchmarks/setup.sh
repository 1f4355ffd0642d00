#!/usr/bin/env bash
# Install what the benchmark runs besides Python: wrk and nginx (Debian),
# configurable-http-proxy 5.3.0 and ws (npm, into tests/benchmarks/node_modules).
# Idempotent: each step is skipped when its tool is already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

as_root=()
[ "$(id -u)" = 0 ] || as_root=(sudo)

apt_updated=0
apt_install() {
    # One `apt-get update` per run, and only if something is missing.
    if [ "$apt_updated" = 0 ]; then
        "${as_root[@]}" apt-get update -qq
        apt_updated=1
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
# nginx lives in /usr/sbin, which is not on every user's PATH.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]} from Debian"
    apt_install "${missing[@]}"
    # The Debian package enables a system nginx service; the benchmark runs its own.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        "${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup.sh: warning: node $(node --version) is older than CHP 5.3.0 asks for (>= 20)" >&2
fi

if ! node -e 'require(process.argv[1] + "/node_modules/configurable-http-proxy/package.json"); require(process.argv[1] + "/node_modules/ws")' "$here" 2>/dev/null; then
    echo "setup.sh: npm install --prefix $here"
    npm install --prefix "$here" --no-audit --no-fund --loglevel=error
fi

echo "setup.sh: ready: $(wrk --version 2>&1 | head -n1 | sed 's/ Copyright.*//'); $( (command -v nginx || echo /usr/sbin/nginx) ); node $(node --version); CHP $(node -p "require('$here/node_modules/configurable-http-proxy/package.json').version")"
