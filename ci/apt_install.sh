#!/usr/bin/env bash
# A Debian package the checks use, unless FILE is already there: apt-get as root; otherwise one line saying what to
# install (exit 0: the caller decides what to do without it). A failed apt-get exits non-zero.
# Usage: bash ci/apt_install.sh PACKAGE FILE WHAT   (WHAT: what it is for, as in "the browser check")
set -euo pipefail
package=$1 file=$2 what=$3
if [ -e "$file" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian $package for $what ..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
else
  echo "no $file and cannot apt-get install it: install Debian's '$package' package" >&2
fi
