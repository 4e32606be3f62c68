#!/bin/sh
# Runs every fuzz target for FUZZTIME each (default 3s) and prints a table of executions.
# `make test` runs it short, `make fuzz` long (FUZZTIME=1m). New interesting inputs stay in the
# Go build cache; a failing input is written to the package's testdata/fuzz, to be checked in
# with the fix.
set -eu
FUZZTIME=${FUZZTIME:-3s}
GO=${GO:-go}
targets="./lock:FuzzParseMax ./lock:FuzzParseCurrent ./lock:FuzzParseRecord ./lock:FuzzValidateName
./lock:FuzzValidateTier ./monitor:FuzzParseRange ./cmd/tierlock-reaper:FuzzDecodeEvent"
total=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
printf '%-40s %12s\n' "fuzz target ($FUZZTIME each)" executions
for t in $targets; do
	pkg=${t%%:*} name=${t#*:}
	if ! $GO test -run='^$' -fuzz="^$name\$" -fuzztime="$FUZZTIME" "$pkg" >"$out" 2>&1; then
		cat "$out"
		echo "fuzz: $pkg $name failed" >&2
		exit 1
	fi
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' "$out" | tail -1)
	execs=${execs:-0}
	total=$((total + execs))
	printf '%-40s %12s\n' "$pkg $name" "$execs"
done
printf '%-40s %12s\n' total "$total"
