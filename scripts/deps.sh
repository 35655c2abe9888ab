#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: Bun (from npm), the locked dependencies,
# and, with --browser, Debian's Chromium for the browser tests. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bun >/dev/null 2>&1; then
  echo "deps: installing Bun from npm"
  npm install -g bun >/dev/null
fi
bun install --frozen-lockfile

# Korean names must render in screenshots too, hence the Nanum fonts.
if [[ "${1:-}" == "--browser" ]] && ! { [[ -x /usr/bin/chromium ]] && dpkg -s fonts-nanum >/dev/null 2>&1; }; then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    echo "deps: /usr/bin/chromium is missing; install Debian's chromium package to run the browser tests" >&2
    exit 1
  fi
  SUDO=$([[ $(id -u) -eq 0 ]] || echo sudo)
  echo "deps: installing Debian's chromium for the browser tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-nanum >/dev/null
fi
