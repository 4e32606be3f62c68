package main

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tierlock/tierlock/internal/envfile"
)

// The table packaging/system checks against systemd's own reading of each file
// (TestSystemEnvironmentFile), read here by tierlock: what systemd makes of a file tierlock
// takes is what tierlock makes of it, and what tierlock refuses it refuses by line and name.
func TestParseSettingsAsSystemdDoes(t *testing.T) {
	b, err := os.ReadFile("../../internal/envfile/testdata/systemd.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name, Text, Refused string
		Want                map[string]string
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := parseSettings("f", tc.Text)
			if tc.Refused != "" {
				if err == nil || !strings.Contains(err.Error(), "f"+tc.Refused) {
					t.Fatalf("error %v, want one containing %q", err, "f"+tc.Refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.Want) {
				t.Errorf("got %q, systemd makes %q", got, tc.Want)
			}
		})
	}
}

// A bad line never echoes its value: it may be a token pasted in the wrong place.
func TestParseSettingsHidesValues(t *testing.T) {
	const token = "8f2e1c7a-5b3d-4e9f-a1c6-d4b7e0f93a21"
	for _, text := range []string{
		"CONSUL_HTTP_TOKEN " + token + "\n",
		"RUBYOPT=" + token + "\n",
		"export CONSUL_HTTP_TOKEN=" + token + "\n",
		"CONSUL_HTTP_TOKEN=" + token + "\xff\n",
		token + "\n",
		"# \\\nCONSUL_HTTP_TOKEN=" + token + "\n",
	} {
		_, err := parseSettings("f", text)
		if err == nil || strings.Contains(err.Error(), token) || strings.Contains(err.Error(), token[:8]) {
			t.Errorf("%q: error %v must name the line and not the value", text, err)
		}
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
		if rest, ok := strings.CutPrefix(line, "#"); ok && strings.Contains(rest, "=") && envfile.ValidName(strings.SplitN(rest, "=", 2)[0]) {
			line = rest
		}
		b.WriteString(line + "\n")
	}
	vars, err := parseSettings("tierlock", b.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(vars) < 5 {
		t.Fatalf("only %d examples found in the shipped file", len(vars))
	}
	if got := vars["TIERLOCK_COMMAND"]; got != "chef-client --once --no-fork" {
		t.Errorf("TIERLOCK_COMMAND=%q", got)
	}
	// As shipped (all commented out), it sets nothing.
	if vars, err := parseSettings("tierlock", string(data)); err != nil || len(vars) != 0 {
		t.Errorf("as shipped: %v, %v", vars, err)
	}
}

type fakeEnv map[string]string

// rootFile is a settings file as the package leaves it.
func rootFile(text string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte(text), Mode: 0o644, Sys: &syscall.Stat_t{Uid: 0}}
}

// source is the environment e, files (keyed by absolute path) and euid 0 unless changed.
func (e fakeEnv) source(files fstest.MapFS) configSource {
	rel := func(p string) string { return strings.TrimPrefix(p, "/") }
	return configSource{
		lookup: func(k string) (string, bool) { v, ok := e[k]; return v, ok },
		setenv: func(k, v string) error { e[k] = v; return nil },
		stat:   func(p string) (fs.FileInfo, error) { return fs.Stat(files, rel(p)) },
		open:   func(p string) (fs.File, error) { return files.Open(rel(p)) },
	}
}

func TestApplyConfig(t *testing.T) {
	cmds := (&App{}).cliApp().Commands
	files := fstest.MapFS{
		"etc/default/tierlock": rootFile("TIERLOCK_TIER=prod/web\nTIERLOCK_WAIT=5m\n"),
		"other":                rootFile("TIERLOCK_TIER=stage/web\n"),
		"bad":                  rootFile("TIERLOCK_TIER=prod/web\nnonsense\n"),
		"dup":                  rootFile("TIERLOCK_TIER=t1/web\nTIERLOCK_TIER=t5/web\n"),
		"client.rb":            rootFile("log_level :info\n"),
		"dir":                  &fstest.MapFile{Mode: fs.ModeDir | 0o755, Sys: &syscall.Stat_t{}},
		"fifo":                 &fstest.MapFile{Mode: fs.ModeNamedPipe | 0o644, Sys: &syscall.Stat_t{}},
		"zero":                 &fstest.MapFile{Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Sys: &syscall.Stat_t{}},
		"big":                  rootFile("# " + strings.Repeat("x", 65<<10) + "\n"),
		"theirs":               &fstest.MapFile{Data: []byte("TIERLOCK_TIER=prod/web\n"), Mode: 0o644, Sys: &syscall.Stat_t{Uid: 1000}},
		"group-writable":       &fstest.MapFile{Data: []byte("TIERLOCK_TIER=prod/web\n"), Mode: 0o664, Sys: &syscall.Stat_t{Uid: 0}},
		"world-writable":       &fstest.MapFile{Data: []byte("TIERLOCK_TIER=prod/web\n"), Mode: 0o646, Sys: &syscall.Stat_t{Uid: 0}},
		"no-owner":             &fstest.MapFile{Data: []byte("TIERLOCK_TIER=prod/web\n"), Mode: 0o644},
	}
	defaults := map[string]string{"TIERLOCK_TIER": "prod/web", "TIERLOCK_WAIT": "5m"}
	for _, tc := range []struct {
		name string
		env  fakeEnv
		euid int
		args []string
		want map[string]string // the environment after; nil: unchanged
		err  string
	}{
		{name: "default file", env: fakeEnv{}, args: []string{"run"}, want: map[string]string{"TIERLOCK_TIER": "prod/web", "TIERLOCK_WAIT": "5m"}},
		{name: "environment wins", env: fakeEnv{"TIERLOCK_WAIT": "1s"}, args: []string{"run"}, want: map[string]string{"TIERLOCK_TIER": "prod/web", "TIERLOCK_WAIT": "1s"}},
		{name: "--config", env: fakeEnv{}, args: []string{"run", "--config", "/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "--config=", env: fakeEnv{}, args: []string{"status", "--config=/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "-config", env: fakeEnv{}, args: []string{"status", "-config", "/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "--config after other flags", env: fakeEnv{}, args: []string{"run", "--tier", "x/y", "--dry-run", "--wait=1s", "--config", "/other", "--", "true"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "the last --config", env: fakeEnv{}, args: []string{"run", "--config", "/missing", "--config", "/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "TIERLOCK_CONFIG", env: fakeEnv{"TIERLOCK_CONFIG": "/other"}, args: []string{"run"}, want: map[string]string{"TIERLOCK_CONFIG": "/other", "TIERLOCK_TIER": "stage/web"}},
		{name: "flag wins over TIERLOCK_CONFIG", env: fakeEnv{"TIERLOCK_CONFIG": "/missing"}, args: []string{"run", "--config", "/other"}, want: map[string]string{"TIERLOCK_CONFIG": "/missing", "TIERLOCK_TIER": "stage/web"}},
		{name: "/dev/null names none", env: fakeEnv{"TIERLOCK_CONFIG": os.DevNull}, args: []string{"run"}, want: map[string]string{"TIERLOCK_CONFIG": os.DevNull}},
		{name: "the last of a name wins", env: fakeEnv{}, args: []string{"check", "--config", "/dup"}, want: map[string]string{"TIERLOCK_TIER": "t5/web"}},
		// --config belongs to tierlock's command line, not to the command's.
		{name: "after -- is the command's", env: fakeEnv{}, args: []string{"run", "--", "x", "--config", "/missing"}, want: defaults},
		{name: "after the command's name is the command's", env: fakeEnv{}, args: []string{"run", "chef-client", "--config", "/client.rb"}, want: defaults},
		{name: "after the command's name, flags first", env: fakeEnv{}, args: []string{"run", "--tier", "a/b", "--dry-run", "chef-client", "--config=/client.rb"}, want: defaults},
		{name: "a flag's value is not the command", env: fakeEnv{}, args: []string{"run", "--holder", "chef-client", "--config", "/other"}, want: map[string]string{"TIERLOCK_TIER": "stage/web"}},
		{name: "named file missing", env: fakeEnv{}, args: []string{"run", "--config", "/missing"}, err: "settings file /missing: file does not exist"},
		{name: "TIERLOCK_CONFIG missing", env: fakeEnv{"TIERLOCK_CONFIG": "/missing"}, args: []string{"run"}, err: "settings file /missing"},
		{name: "no name", env: fakeEnv{}, args: []string{"run", "--config"}, err: "a file name is required"},
		{name: "empty name", env: fakeEnv{}, args: []string{"run", "--config="}, err: "a file name is required"},
		{name: "bad line", env: fakeEnv{}, args: []string{"run", "--config", "/bad"}, err: "/bad:2: want NAME=value"},
		{name: "a file of another program", env: fakeEnv{}, args: []string{"run", "--config", "/client.rb"}, err: "/client.rb:1: want NAME=value"},
		{name: "directory", env: fakeEnv{}, args: []string{"run", "--config", "/dir"}, err: "settings file /dir: a directory, not a regular file"},
		{name: "FIFO", env: fakeEnv{}, args: []string{"run", "--config", "/fifo"}, err: "settings file /fifo: a FIFO, not a regular file"},
		{name: "device", env: fakeEnv{}, args: []string{"run", "--config", "/zero"}, err: "settings file /zero: a character device, not a regular file"},
		{name: "over 64 KiB", env: fakeEnv{}, args: []string{"run", "--config", "/big"}, err: "settings file /big: 66563 bytes, over the 65536"},
		{name: "as root, another owner", env: fakeEnv{}, args: []string{"run", "--config", "/theirs"}, err: "settings file /theirs: owned by uid 1000 with mode 0644"},
		{name: "as root, group-writable", env: fakeEnv{}, args: []string{"run", "--config", "/group-writable"}, err: "settings file /group-writable: owned by uid 0 with mode 0664"},
		{name: "as root, world-writable", env: fakeEnv{}, args: []string{"run", "--config", "/world-writable"}, err: "owned by uid 0 with mode 0646"},
		{name: "as root, owner unknown", env: fakeEnv{}, args: []string{"run", "--config", "/no-owner"}, err: "owned by uid -1"},
		{name: "as a user, another owner", env: fakeEnv{}, euid: 1000, args: []string{"run", "--config", "/theirs"}, want: map[string]string{"TIERLOCK_TIER": "prod/web"}},
		{name: "as a user, group-writable", env: fakeEnv{}, euid: 1000, args: []string{"run", "--config", "/group-writable"}, want: map[string]string{"TIERLOCK_TIER": "prod/web"}},
		{name: "as a user, still no FIFO", env: fakeEnv{}, euid: 1000, args: []string{"run", "--config", "/fifo"}, err: "a FIFO, not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.env.source(files)
			src.euid = tc.euid
			before := maps.Clone(tc.env)
			err := applyConfig(tc.args, cmds, src)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				if !maps.Equal(tc.env, before) {
					t.Errorf("a refused file set %v", tc.env)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(map[string]string(tc.env), tc.want) {
				t.Errorf("environment %v, want %v", tc.env, tc.want)
			}
		})
	}
	// A missing default file is no error: most machines running status have none.
	if err := applyConfig([]string{"status"}, cmds, fakeEnv{}.source(fstest.MapFS{})); err != nil {
		t.Errorf("missing default file: %v", err)
	}
	// An unreadable one is.
	src := fakeEnv{}.source(files)
	src.open = func(string) (fs.File, error) { return nil, fs.ErrPermission }
	if err := applyConfig([]string{"status"}, cmds, src); err == nil || !strings.Contains(err.Error(), DefaultConfigFile+": permission denied") {
		t.Errorf("unreadable default file: %v", err)
	}
	// The file read is the one opened: a regular file at stat that is a FIFO once opened is refused.
	src = fakeEnv{}.source(files)
	src.open = func(string) (fs.File, error) { return files.Open("fifo") }
	if err := applyConfig([]string{"run", "--config", "/other"}, cmds, src); err == nil || !strings.Contains(err.Error(), "a FIFO") {
		t.Errorf("swapped after stat: %v", err)
	}
}

// blockingFile never returns from Read: a settings file on a hung network file system.
type blockingFile struct{ fs.File }

func (blockingFile) Read([]byte) (int, error) { select {} }

// A read that hangs cannot make tierlock deaf to SIGTERM: it ends with 75, nothing ran.
func TestLoadConfigStopsOnSignal(t *testing.T) {
	files := fstest.MapFS{"etc/default/tierlock": rootFile("TIERLOCK_TIER=prod/web\n")}
	src := fakeEnv{}.source(files)
	src.open = func(p string) (fs.File, error) {
		f, err := files.Open(strings.TrimPrefix(p, "/"))
		return blockingFile{f}, err
	}
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- loadConfig([]string{"run"}, nil, src, sigs) }()
	select {
	case err := <-done:
		t.Fatalf("returned before the signal: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	start := time.Now()
	sigs <- syscall.SIGTERM
	select {
	case err := <-done:
		if exitCode(err) != exitTempFail || !strings.Contains(message(err), "terminated while reading the settings file") {
			t.Errorf("exit %d, %q", exitCode(err), message(err))
		}
		t.Logf("returned %s after SIGTERM", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("still reading 5s after SIGTERM")
	}
	// Without a signal, a bad file is a configuration error.
	src = fakeEnv{}.source(fstest.MapFS{"etc/default/tierlock": rootFile("RUBYOPT=x\n")})
	if err := loadConfig([]string{"run"}, nil, src, nil); exitCode(err) != exitConfig {
		t.Errorf("bad file: exit %d (%v)", exitCode(err), err)
	}
}
