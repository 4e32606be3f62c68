package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The completion scripts are urfave/cli's own, byte for byte: the copies embedded here must
// match the ones in the urfave/cli module go.mod pins, so an upgrade of it cannot leave them
// stale.
func TestCompletionScriptsAreUrfaves(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/urfave/cli/v2").Output()
	if err != nil {
		t.Fatalf("go list urfave/cli: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	for name, embedded := range map[string]string{"bash_autocomplete": bashAutocomplete, "zsh_autocomplete": zshAutocomplete} {
		upstream, err := os.ReadFile(filepath.Join(dir, "autocomplete", name))
		if err != nil {
			t.Fatal(err)
		}
		if string(upstream) != embedded {
			t.Errorf("autocomplete/%s differs from urfave/cli's (%s): copy it again", name, dir)
		}
	}
	// What is printed is the script plus a header and PROG, with its one eval replaced;
	// nothing else of it is dropped.
	if strings.Count(bashAutocomplete, bashEval) != 1 {
		t.Errorf("urfave's bash script no longer has the line %q to replace", bashEval)
	}
	if got := bashCompletion(); !strings.HasSuffix(got, strings.Replace(bashAutocomplete, bashEval, bashAsk, 1)) ||
		!strings.Contains(got, "\nPROG=tierlock\n") || strings.Contains(got, "$(eval") {
		t.Errorf("bash completion is not urfave's script with PROG=tierlock and no eval:\n%s", got)
	}
	if got := zshCompletion(); !strings.HasPrefix(got, "#compdef tierlock\n") || strings.Contains(got, "$PROG") ||
		!strings.Contains(got, strings.ReplaceAll(strings.SplitN(zshAutocomplete, "\n", 2)[1], "$PROG", "tierlock")) {
		t.Errorf("zsh completion is not urfave's script for tierlock:\n%s", got)
	}
}
