//go:build race

package consulagent

// raceEnabled: the tests run under -race, so the binaries they build (Build) are built with it
// too, and the race detector sees the commands as users run them.
const raceEnabled = true
