package main

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       map[string]string
		err        string // a part of the error; "" for none
	}{
		{name: "empty", text: "", want: map[string]string{}},
		{name: "comments and blanks", text: "# a\n; b\n\n   \n", want: map[string]string{}},
		{name: "bare", text: "TIERLOCK_TIER=prod/web\n", want: map[string]string{"TIERLOCK_TIER": "prod/web"}},
		{name: "double quoted", text: `TIERLOCK_COMMAND="chef-client --once --no-fork"`, want: map[string]string{"TIERLOCK_COMMAND": "chef-client --once --no-fork"}},
		{name: "single quoted keeps $", text: `X='a $b'`, want: map[string]string{"X": "a $b"}},
		{name: "empty value", text: "TIERLOCK_HOLDER=", want: map[string]string{"TIERLOCK_HOLDER": ""}},
		{name: "crlf", text: "A=1\r\nB=2\r\n", want: map[string]string{"A": "1", "B": "2"}},
		{name: "indented", text: "   A=1", want: map[string]string{"A": "1"}},
		{name: "no equals", text: "# ok\nTIERLOCK_TIER prod/web\n", err: "f:2: want NAME=value"},
		{name: "space before equals", text: "A =1", err: `f:1: "A " is not a variable name`},
		{name: "export", text: "export A=1", err: "is not a variable name"},
		{name: "digit first", text: "1A=1", err: "is not a variable name"},
		{name: "unquoted blank", text: "A=chef-client --once", err: "f:1: A: a value with blanks"},
		{name: "unterminated", text: `A="x`, err: "unterminated"},
		{name: "dollar in double quotes", text: `A="$HOME"`, err: "sh would expand"},
		{name: "bare dollar", text: `A=$HOME`, err: "must be in quotes"},
		{name: "quote inside", text: `A="x"y"`, err: "inside the quotes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars, err := parseEnvFile("f", tc.text)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, v := range vars {
				got[v.name] = v.value
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s=%q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// A bad line never echoes its value: it may be a token pasted in the wrong place.
func TestParseEnvFileHidesValues(t *testing.T) {
	_, err := parseEnvFile("f", "CONSUL_HTTP_TOKEN=s3cret token\n")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v must name the line and not the value", err)
	}
}

// The shipped file, every example uncommented, is what tierlock reads.
func TestShippedDefaultFileParses(t *testing.T) {
	data, err := os.ReadFile("../../packaging/default/tierlock")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "#"); ok && strings.Contains(rest, "=") && validEnvName(strings.SplitN(rest, "=", 2)[0]) {
			line = rest
		}
		b.WriteString(line + "\n")
	}
	vars, err := parseEnvFile("tierlock", b.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(vars) < 5 {
		t.Fatalf("only %d examples found in the shipped file", len(vars))
	}
}

type fakeEnv map[string]string

func (e fakeEnv) source(files map[string]string) configSource {
	return configSource{
		lookup: func(k string) (string, bool) { v, ok := e[k]; return v, ok },
		setenv: func(k, v string) error { e[k] = v; return nil },
		readFile: func(p string) ([]byte, error) {
			if s, ok := files[p]; ok {
				return []byte(s), nil
			}
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		},
	}
}

func TestApplyConfig(t *testing.T) {
	files := map[string]string{
		DefaultConfigFile: "TIERLOCK_TIER=prod/web\nTIERLOCK_WAIT=5m\n",
		"/other":          "TIERLOCK_TIER=stage/web\n",
		"/bad":            "TIERLOCK_TIER=prod/web\nnonsense\n",
	}
	for _, tc := range []struct {
		name string
		env  fakeEnv
		args []string
		want map[string]string
		err  string
	}{
		{name: "default file", env: fakeEnv{}, args: []string{"run"}, want: map[string]string{"TIERLOCK_TIER": "prod/web", "TIERLOCK_WAIT": "5m"}},
		{name: "environment wins", env: fakeEnv{"TIERLOCK_WAIT": "1s"}, args: []string{"run"}, want: map[string]string{"TIERLOCK_TIER": "prod/web", "TIERLOCK_WAIT": "1s"}},
		{name: "--config", env: fakeEnv{}, args: []string{"run", "--config", "/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "--config=", env: fakeEnv{}, args: []string{"status", "--config=/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "TIERLOCK_CONFIG", env: fakeEnv{"TIERLOCK_CONFIG": "/other"}, args: []string{"run"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "flag wins over TIERLOCK_CONFIG", env: fakeEnv{"TIERLOCK_CONFIG": "/missing"}, args: []string{"run", "--config", "/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "after -- is the command's", env: fakeEnv{}, args: []string{"run", "--", "x", "--config", "/missing"}, want: map[string]string{"TIERLOCK_TIER": "prod/web"}},
		{name: "named file missing", env: fakeEnv{}, args: []string{"run", "--config", "/missing"}, err: "settings file /missing"},
		{name: "TIERLOCK_CONFIG missing", env: fakeEnv{"TIERLOCK_CONFIG": "/missing"}, args: []string{"run"}, err: "settings file /missing"},
		{name: "no name", env: fakeEnv{}, args: []string{"run", "--config"}, err: "a file name is required"},
		{name: "bad line", env: fakeEnv{}, args: []string{"run", "--config", "/bad"}, err: "/bad:2: want NAME=value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := applyConfig(tc.args, tc.env.source(files))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if tc.env[k] != v {
					t.Errorf("%s=%q, want %q", k, tc.env[k], v)
				}
			}
		})
	}
	// A missing default file is no error: most machines running status have none.
	if err := applyConfig([]string{"status"}, fakeEnv{}.source(nil)); err != nil {
		t.Errorf("missing default file: %v", err)
	}
	// An unreadable one is.
	src := fakeEnv{}.source(nil)
	src.readFile = func(string) ([]byte, error) { return nil, errors.New("permission denied") }
	if err := applyConfig([]string{"status"}, src); err == nil || !strings.Contains(err.Error(), DefaultConfigFile) {
		t.Errorf("unreadable default file: %v", err)
	}
}
