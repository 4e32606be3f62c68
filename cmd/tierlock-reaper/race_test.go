//go:build race

package main

// raceEnabled: the tests, and so the binaries they build, run under the race detector.
const raceEnabled = true
