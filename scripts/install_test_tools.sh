#!/usr/bin/env bash
# Test tools on top of requirements.txt: pytest, hypothesis, Playwright's Python package, and Debian's
# chromium for the real-browser test (Playwright's own browser download needs internet access that CI lacks).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  as_root=""; [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -q && $as_root apt-get install -y -q chromium
fi
