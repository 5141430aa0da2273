#!/usr/bin/env bash
# Rebuilds ../demo.js and ../demo.css (minified) from main.js and the npm packages pinned in
# package-lock.json. Needs node and npm; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npx esbuild main.js --bundle --minify --format=iife --target=es2020 \
  --outfile=../demo.js --log-level=warning
ls -l ../demo.js ../demo.css
