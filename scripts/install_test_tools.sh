#!/usr/bin/env bash
# Test tools on top of requirements.txt: pytest, hypothesis, Playwright's Python package, the optional extras the
# suite covers (the ONNX export, the API and bulk scoring on Ray), and Debian's chromium for the real-browser
# test (Playwright's own browser download needs internet access that CI lacks).
# A browser already on PATH (chromium, chromium-browser or google-chrome, the names tests/test_browser.py looks
# for) is kept only if it starts headless; a broken one, such as Ubuntu's snap stub, gets Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
# Everything the suite tests: the dev tools, the ONNX export (requirements-export.txt) and the API and bulk
# scoring on Ray (requirements-serve.txt), at the versions CI tested.
pip install -q -r requirements-dev.txt -r requirements-export.txt -r requirements-serve.txt -c constraints.txt
usable_browser() {
  local name
  for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1 \
      && timeout 60 "$name" --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1; then
      echo "browser for the tests: $(command -v "$name")"
      return 0
    fi
  done
  return 1
}
if ! usable_browser; then
  as_root=""; [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -q && $as_root apt-get install -y -q chromium
  usable_browser || { echo "chromium was installed but does not start headless" >&2; exit 1; }
fi
