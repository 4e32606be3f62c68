//go:build !race

package consulagent

// RaceEnabled: see race.go.
const RaceEnabled = false
