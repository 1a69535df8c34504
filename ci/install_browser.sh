#!/usr/bin/env bash
# Debian's chromium for the JupyterLab browser check (Playwright drives it; no browser is downloaded).
exec bash "$(dirname "$0")/apt_install.sh" chromium /usr/bin/chromium "the browser check"
