#!/bin/sh
# Runs every fuzz target for FUZZTIME each (default 10000x) and prints a table of executions.
# `make test` runs it short, by count (10000x), `make fuzz` long (FUZZTIME=1m). New interesting
# inputs stay in the Go build cache; a failing input is written to the package's testdata/fuzz,
# to be checked in with the fix.
#
# Why a count in `make test`: with a duration, Go 1.26's fuzz coordinator can report a bare
# "context deadline exceeded" when the time runs out while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27), which a loaded CI machine hits. A count has no deadline to race. For a
# duration run the same bare message, with no failing input written, is reported as that race
# and the target's corpus is replayed instead.
set -eu
FUZZTIME=${FUZZTIME:-10000x}
# FUZZWORKERS: the fuzzing processes per target (go test -parallel; default the cores). make
# test runs one, beside go test.
FUZZWORKERS=${FUZZWORKERS:-$(nproc)}
GO=${GO:-go}
targets="./lock/schema:FuzzParseMax ./lock/schema:FuzzParseCurrent ./lock/schema:FuzzParseRecord ./lock/schema:FuzzValidateName
./lock/schema:FuzzValidateTier ./lock/schema:FuzzParseSchedule ./lock/schema:FuzzPolicyAndRollout ./monitor:FuzzParseRange ./cmd/tierlock-reaper:FuzzDecodeEvent
./internal/envfile:FuzzParse"
total=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
printf '%-40s %12s\n' "fuzz target ($FUZZTIME each)" executions
for t in $targets; do
	pkg=${t%%:*} name=${t#*:}
	if ! $GO test -run='^$' -fuzz="^$name\$" -fuzztime="$FUZZTIME" -parallel="$FUZZWORKERS" "$pkg" >"$out" 2>&1; then
		if grep -q 'context deadline exceeded' "$out" && ! grep -q -e 'Failing input written' -e 'panic:' "$out" &&
			$GO test -run="^$name\$" "$pkg" >/dev/null 2>&1; then
			echo "fuzz: $pkg $name: Go's fuzz-time race (go.dev/issue/75804); its corpus replays clean" >&2
		else
			cat "$out"
			echo "fuzz: $pkg $name failed" >&2
			exit 1
		fi
	fi
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' "$out" | tail -1)
	execs=${execs:-0}
	total=$((total + execs))
	printf '%-40s %12s\n' "$pkg $name" "$execs"
done
printf '%-40s %12s\n' total "$total"
