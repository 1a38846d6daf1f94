#!/usr/bin/env bash
# Debian packages some tests measure on or drive (they skip with a reason without them):
# the Adwaita icons (issue 18's near-duplicate precision/recall) and headless Chromium
# (the report test). Installed only when missing, as root, with apt; otherwise a note.
# The report test fails under CI=true without Chromium. DATAVERSION_SKIP_SYSTEM_PACKAGES=1 opts out.
set -uo pipefail
[ -n "${DATAVERSION_SKIP_SYSTEM_PACKAGES:-}" ] && exit 0
want=()
[ -d /usr/share/icons/Adwaita ] || want+=(adwaita-icon-theme)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian packages: ${want[*]} (once)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}") >/dev/null 2>&1 \
    || echo "warning: could not install ${want[*]}; the tests that need them will skip" >&2
else
  echo "note: ${want[*]} missing and apt-get unavailable (or not root); the tests that need them will skip" >&2
fi
exit 0
