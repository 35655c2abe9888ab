#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: Bun (from npm), the locked dependencies,
# with --browser Debian's Chromium for the browser tests, with --netns Debian's nftables for the
# real-network fault tests (test/e2e/netfaults.test.ts, `bun run netfaults`), and with --bench
# Debian's redis-server for the Socket.IO comparison (bench/compare.ts). Safe to run again; the
# options may be combined.
set -euo pipefail
cd "$(dirname "$0")/.."

browser=false
bench=false
netns=false
for arg in "$@"; do
  case "$arg" in
    --browser) browser=true ;;
    --bench) bench=true ;;
    --netns) netns=true ;;
    *) echo "deps: unknown option $arg (known: --browser, --netns, --bench)" >&2; exit 2 ;;
  esac
done

if ! command -v bun >/dev/null 2>&1; then
  echo "deps: installing Bun from npm"
  npm install -g bun >/dev/null
fi
bun install --frozen-lockfile

# Installs Debian packages $2.. unless `$1` already says they are there; explains itself when it cannot.
apt_install() {
  local present=$1 why=$2
  shift 2
  if eval "$present"; then return 0; fi
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    echo "deps: $why needs Debian's $*; as root run: apt-get update && apt-get install -y $*" >&2
    return 1
  fi
  local sudo
  sudo=$([[ $(id -u) -eq 0 ]] || echo sudo)
  echo "deps: installing Debian's $* for $why"
  $sudo apt-get update -qq
  # RUNLEVEL=1: a package's init script must not start a service (redis-server) behind our back.
  $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" >/dev/null
}

# Korean names must render in screenshots too, hence the Nanum fonts.
if $browser; then
  apt_install '[[ -x /usr/bin/chromium ]] && dpkg -s fonts-nanum >/dev/null 2>&1' 'the browser tests' chromium fonts-nanum
fi
# The benchmark starts its own redis-server on a free loopback port and stops it afterwards.
if $bench; then
  apt_install 'command -v redis-server >/dev/null 2>&1' 'the Socket.IO + Redis comparison benchmark' redis-server
fi
# Cutting links needs nft; without root the fault tests skip and say why, so this is not fatal.
if $netns; then
  apt_install 'command -v nft >/dev/null 2>&1' 'the network fault tests' nftables || true
fi
