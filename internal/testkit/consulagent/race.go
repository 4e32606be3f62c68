//go:build race

package consulagent

// RaceEnabled: the tests run under -race, so the binaries they build (Build) are built with it
// too, and the race detector sees the commands as users run them. Exported for tests that
// weigh what -race costs, or build a binary only when it differs from a plain one.
const RaceEnabled = true
