package consulagent

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Under `go test -race`, Build builds with -race, so the race detector watches the commands
// the tests run; without it, it does not. BuildPlain never does.
func TestBuildFollowsRace(t *testing.T) {
	for _, tc := range []struct {
		build func(pkgDir, out, ldflags string, extra ...string) error
		race  bool
	}{{Build, RaceEnabled}, {BuildPlain, false}} {
		out := filepath.Join(t.TempDir(), "tierlock")
		if err := tc.build("../../../cmd/tierlock", out, "-X main.version=0.0.0-test"); err != nil {
			t.Fatal(err)
		}
		info, err := exec.Command("go", "version", "-m", out).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(info), "-race=true"); got != tc.race {
			t.Errorf("built with -race: %v, want %v (the tests run with it: %v)\n%s", got, tc.race, RaceEnabled, info)
		}
	}
}
