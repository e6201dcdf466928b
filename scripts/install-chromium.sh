#!/usr/bin/env bash
# Headless Chromium for the browser tests (the forensics HTML report is rendered in it to check
# that it makes no network fetch). Idempotent; needs root on Debian 12.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
apt-get -o DPkg::Lock::Timeout=600 update -q
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
  --no-install-recommends chromium
