//go:build !race

package consulagent

// raceEnabled: see race.go.
const raceEnabled = false
