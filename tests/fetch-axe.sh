#!/usr/bin/env bash
# Fetches axe-core, the accessibility checker the browser tests inject into
# each console page, from the npm registry into DEST/axe.min.js (default
# target/axe-core/). Pinned: the version and the SHA-512 the registry's
# metadata gives for its tarball (`dist.integrity`); a tarball with any
# other digest is refused. No node: the tests read the file's text and run
# it in the page over WebDriver. Called by .ci/run, and by the tests when
# the file is missing.
#
# To move to another version: read `dist.integrity` of
# https://registry.npmjs.org/axe-core/VERSION and pin both here.
set -euo pipefail

VERSION=4.14.1
INTEGRITY=sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==
URL="https://registry.npmjs.org/axe-core/-/axe-core-${VERSION}.tgz"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-${CARGO_TARGET_DIR:-$root/target}/axe-core}"
if [ -f "$dest/axe.min.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

curl --fail --silent --show-error --location --retry 3 --max-time 120 -o "$tmp/axe.tgz" "$URL"
actual="sha512-$(openssl dgst -sha512 -binary "$tmp/axe.tgz" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
    echo "fetch-axe: $URL has digest $actual, expected $INTEGRITY: refused" >&2
    exit 1
fi
tar -xzf "$tmp/axe.tgz" -C "$tmp" package/axe.min.js
mv "$tmp/package/axe.min.js" "$dest/axe.min.js.partial"
mv "$dest/axe.min.js.partial" "$dest/axe.min.js"
echo "$VERSION" > "$dest/VERSION"
echo "fetch-axe: axe-core $VERSION in $dest/axe.min.js"
