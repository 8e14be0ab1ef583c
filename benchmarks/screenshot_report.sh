#!/usr/bin/env bash
# The documented check that a run's report renders with its images: headless Chromium (Debian's `chromium`
# package: apt-get install chromium) loads RUN_DIR/report/index.html and saves a screenshot.
#   bash benchmarks/screenshot_report.sh runs/mrpc_report docs/report.png
set -euo pipefail
run_dir=$1
out=${2:-report.png}
page="file://$(cd "$run_dir" && pwd)/report/index.html"
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars --window-size=1000,2900 \
  --screenshot="$(realpath -m "$out")" "$page" 2>/dev/null
rm -rf "$profile"
# every <img> of the page must exist beside it and be a PNG
for img in $(grep -o '<img src="[^"]*"' "$run_dir/report/index.html" | cut -d'"' -f2); do
  head -c 8 "$run_dir/report/$img" | grep -q PNG || { echo "missing or broken image: $img" >&2; exit 1; }
done
echo "rendered $page -> $out"
