package main

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// shWords is how sh itself splits line (globbing off), to hold splitCommand to sh's rules.
func shWords(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `set -f; eval "set -- $1"; printf '%s\0' "$@"`, "sh", line).Output()
	if err != nil {
		t.Fatalf("sh on %q: %v", line, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       []string
	}{
		{"one word", "chef-client", []string{"chef-client"}},
		{"blanks separate", " chef-client\t--once  --no-fork ", []string{"chef-client", "--once", "--no-fork"}},
		{"single quotes keep everything", `chef-client -o 'recipe[base], role[web]' '$HOME' 'a\b'`, []string{"chef-client", "-o", "recipe[base], role[web]", "$HOME", `a\b`}},
		{"double quotes", `sh -c "echo \"hi\" \$HOME \\ \n"`, []string{"sh", "-c", `echo "hi" $HOME \ \n`}},
		{"quotes join a word", `--json-attributes=/etc/chef/"first boot".json`, []string{"--json-attributes=/etc/chef/first boot.json"}},
		{"empty quotes are a word", `printf '%s|' '' ""`, []string{"printf", "%s|", "", ""}},
		{"backslash outside quotes", `touch a\ b \$x \'`, []string{"touch", "a b", "$x", "'"}},
		{"line continuation", "chef-client \\\n--once", []string{"chef-client", "--once"}},
		{"line continuation in double quotes", "echo \"a\\\nb\"", []string{"echo", "ab"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitCommand(tc.line)
			if err != nil {
				t.Fatalf("splitCommand(%q): %v", tc.line, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("splitCommand(%q) = %q, want %q", tc.line, got, tc.want)
			}
			if sh := shWords(t, tc.line); !reflect.DeepEqual(got, sh) {
				t.Errorf("splitCommand(%q) = %q, sh splits it into %q", tc.line, got, sh)
			}
		})
	}
}

// Where sh would expand (globs, ~, comments), tierlock keeps the text as written.
func TestSplitCommandExpandsNothing(t *testing.T) {
	got, err := splitCommand("ls *.json ~/x #y")
	if want := []string{"ls", "*.json", "~/x", "#y"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

func TestSplitCommandRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, line, want string
	}{
		{"empty", "", "no command"},
		{"only blanks", " \t ", "no command"},
		{"unterminated single quote", "chef-client -o 'recipe[x]", "unterminated ' at byte 15"},
		{"unterminated double quote", `echo "abc`, `unterminated " at byte 5`},
		{"trailing backslash", `echo \`, `trailing \`},
		{"variable", "chef-client -c $CONF", `unquoted '$' at byte 15`},
		{"pipe", "chef-client | tee log", `unquoted '|'`},
		{"redirection", "chef-client >log", `unquoted '>'`},
		{"sequence", "chef-client; reboot", `unquoted ';'`},
		{"background", "chef-client &", `unquoted '&'`},
		{"second line", "chef-client\nreboot", `unquoted '\n'`},
		{"subshell", "(chef-client)", `unquoted '('`},
		{"command substitution", "chef-client `hostname`", "unquoted '`'"},
		{"variable in double quotes", `echo "$HOME"`, `'$' at byte 6 would be expanded`},
		{"backquote in double quotes", "echo \"`id`\"", "'`' at byte 6 would be expanded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitCommand(tc.line)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("splitCommand(%q) = %q, %v; want an error containing %q", tc.line, got, err, tc.want)
			}
		})
	}
}
