package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

// completionEnv puts the test's tierlock first on PATH, as `tierlock`: the scripts call it by
// that name to ask for the candidates.
func completionEnv(t *testing.T) []string {
	t.Helper()
	return append(os.Environ(), "PATH="+filepath.Dir(bin(t))+":"+os.Getenv("PATH"))
}

// completions lists, one line per request, what bash completes for each of lines; setup
// loads the completion.
func bashCompletions(t *testing.T, setup string, lines ...string) []string {
	t.Helper()
	script := `source /usr/share/bash-completion/bash_completion
` + setup + `
comp() {
  read -ra COMP_WORDS <<<"$1"; [[ $1 == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE=$1; COMP_POINT=${#1}; COMPREPLY=()
  "$(complete -p tierlock | sed 's/.*-F \([^ ]*\) .*/\1/')"
  echo "${COMPREPLY[*]}"
}
for line; do comp "$line"; done`
	cmd := exec.Command("bash", append([]string{"--norc", "--noprofile", "-c", script, "bash"}, lines...)...)
	cmd.Env = completionEnv(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
}

var completionCases = []struct{ line, want string }{
	{"tierlock ru", "run"},
	{"tierlock s", "status set-max"},
	{"tierlock re", "release repair reap"},
	{"tierlock run --ti", "--tier --timeout"},
	{"tierlock run --comm", "--command"},
	{"tierlock completion ", "bash zsh"},
}

// bash completes from the command definitions, both ways the script is loaded: sourced from
// `tierlock completion bash`, and found by bash-completion where the package installs it.
func TestCompletionBash(t *testing.T) {
	testdeps.File(t, "/usr/share/bash-completion/bash_completion", "bash-completion")
	lines := make([]string, len(completionCases))
	for i, c := range completionCases {
		lines[i] = c.line
	}
	installed := t.TempDir()
	if err := os.MkdirAll(filepath.Join(installed, "completions"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := exec.Command(bin(t), "completion", "bash").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(installed, "completions", "tierlock"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, setup := range map[string]string{
		"sourced":   "source <(tierlock completion bash)",
		"installed": "BASH_COMPLETION_USER_DIR=" + installed + "; _completion_loader tierlock",
	} {
		t.Run(name, func(t *testing.T) {
			got := bashCompletions(t, setup, lines...)
			for i, c := range completionCases {
				if i >= len(got) || got[i] != c.want {
					t.Errorf("%q completes to %q, want %q (all: %q)", c.line, at(got, i), c.want, got)
				}
			}
		})
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "<nothing>"
}

// zsh completes from the definitions too: sourced after compinit, and autoloaded from $fpath
// as the package installs it, where the very first TAB must already complete.
func TestCompletionZsh(t *testing.T) {
	testdeps.File(t, "/bin/zsh", "zsh")
	fpath := t.TempDir()
	script, err := exec.Command(bin(t), "completion", "zsh").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fpath, "_tierlock"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ setup, call string }{
		"sourced":    {"source <(tierlock completion zsh)", "_cli_zsh_autocomplete"},
		"autoloaded": {"", "_tierlock"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, c := range completionCases {
				// _describe shows the candidates that match the word typed so far; here it
				// prints them.
				zsh := `fpath=(` + fpath + ` $fpath); autoload -U compinit && compinit -u -D
` + tc.setup + `
[[ -n $_comps[tierlock] ]] || { print "tierlock has no completion"; exit 1 }
_describe() { print -r -- ${(M)${(@P)2}:#${words[-1]}*} }
words=(${(z)1}); [[ $1 == *" " ]] && words+=("")
CURRENT=${#words}
` + tc.call
				cmd := exec.Command("zsh", "-f", "-c", zsh, "zsh", c.line)
				cmd.Env = completionEnv(t)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("zsh on %q: %v\n%s", c.line, err, out)
				}
				if got := strings.TrimSpace(string(out)); got != c.want {
					t.Errorf("%q completes to %q, want %q", c.line, got, c.want)
				}
			}
		})
	}
}

func TestCompletionBadShell(t *testing.T) {
	for _, args := range [][]string{{"completion", "fish"}, {"completion"}, {"completion", "bash", "zsh"}} {
		r := run(t, exec.Command(bin(t), args...))
		wantCode(t, r, 78)
		if !strings.Contains(r.stderr, "bash or zsh") {
			t.Errorf("tierlock %s: the error does not say what is supported: %s", strings.Join(args, " "), r.stderr)
		}
	}
}
