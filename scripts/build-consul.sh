#!/usr/bin/env bash
# Builds the Consul agent the tests and the demo run against, into bin/consul.
# Debian ships no consul package and `go install consul@v` fails on the module's
# replace directives, so we copy the module source, drop those replaces, and build.
set -euo pipefail

version="${CONSUL_VERSION:-v1.22.5}"
out="${1:-bin/consul}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

# wanted FILE: FILE is a Consul binary of the version wanted; its version's first line is in
# $have. The whole output is read first: with pipefail, `| head -1` could kill consul with
# SIGPIPE and make a good binary look bad.
wanted() {
  [ -x "$1" ] || return 1
  have="$("$1" version 2>/dev/null || true)"
  have="${have%%$'\n'*}"
  case "$have" in "Consul ${version}"*) return 0 ;; esac
  return 1
}

wanted "$out" && exit 0

# A build is kept in the user's cache (as test-system keeps its Debian tree), so that a fresh
# clone copies it in a second instead of building for a minute. It is checked like bin/consul.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tierlock/consul-${version}-$(go env GOVERSION)-$(go env GOOS)-$(go env GOARCH)"
if wanted "$cache"; then
  cp "$cache" "$out.tmp" && mv "$out.tmp" "$out"
  echo "$have (from $cache)"
  exit 0
fi

dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@${version}" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "build-consul: could not download consul ${version}" >&2; exit 1; }

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
for m in api sdk envoyextensions proto-public troubleshoot; do
  go mod edit -dropreplace="github.com/hashicorp/consul/$m"
done
echo "build-consul: building consul ${version} (a few minutes, once)" >&2
GOFLAGS=-mod=mod go build -o "$out.tmp" .
mv "$out.tmp" "$out"
if mkdir -p "$(dirname "$cache")" 2>/dev/null && cp "$out" "$cache.tmp" 2>/dev/null; then
  mv "$cache.tmp" "$cache"
fi
wanted "$out" || { echo "build-consul: $out does not say it is Consul ${version}: $have" >&2; exit 1; }
echo "$have"
