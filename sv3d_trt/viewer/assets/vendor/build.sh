#!/usr/bin/env bash
# Rebuild ../three.bundle.min.js from the npm registry (not run by CI or at install time; the
# bundle is committed). Pins the versions and checks the three tarball's sha256 (VENDORED.md).
set -euo pipefail
THREE=0.187.0
THREE_SHA256=ff540832ded0cfe919764d24a3d88f3e2a05f23303f876423e4f893841e90728
ESBUILD=0.28.2
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "three@$THREE" >/dev/null
echo "$THREE_SHA256  three-$THREE.tgz" | sha256sum -c -
npm install --silent --no-audit --no-fund --no-save "esbuild@$ESBUILD"  # first: npm prunes packages it did not install
mkdir -p node_modules/three && tar xzf "three-$THREE.tgz" -C node_modules/three --strip-components=1
cp "$here/entry.js" .
npx esbuild entry.js --bundle --minify --format=iife --global-name=SV3D_THREE --target=es2020 \
  --legal-comments=none --banner:js="/* three.js $THREE (MIT, see LICENSE-three.txt): the pieces in vendor/entry.js, bundled by esbuild $ESBUILD */" \
  --outfile="$here/../three.bundle.min.js"
cp node_modules/three/LICENSE "$here/../LICENSE-three.txt"
sha256sum "$here/../three.bundle.min.js"
