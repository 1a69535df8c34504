#!/usr/bin/env bash
# Debian's chromium for the JupyterLab browser check (Playwright drives it; no browser is downloaded).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian chromium for the browser check ..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "no /usr/bin/chromium and cannot apt-get install it: install Debian's 'chromium' package" >&2
fi
