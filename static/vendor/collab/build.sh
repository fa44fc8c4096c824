#!/usr/bin/env bash
# Rebuild the vendored collaboration bundle (only when upgrading yjs / quill): needs node + npm.
# The output is committed; running or testing Aula never runs this.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
cp package.json package-lock.json entry.js "$work"/
(cd "$work" && npm ci --silent && npx esbuild entry.js --bundle --minify --format=iife --target=es2020 \
  --legal-comments=eof --outfile=aula-collab.js)
cp "$work/aula-collab.js" aula-collab.js
cp "$work/node_modules/quill/dist/quill.snow.css" quill.snow.css
for pkg in yjs lib0 quill quill-cursors y-quill; do
  echo "== $pkg $(node -p "require('$work/node_modules/$pkg/package.json').version") ==" ; cat "$work/node_modules/$pkg/LICENSE"* 2>/dev/null \
    || node -p "'License: ' + require('$work/node_modules/$pkg/package.json').license"; echo
done > LICENSES.txt
rm -rf "$work"
