package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/envfile"
	"github.com/tierlock/tierlock/runner"
)

// DefaultConfigFile is the settings file the package ships: tierlock.service reads it as its
// EnvironmentFile, and tierlock reads it too (the cron example relies on that), so a person's
// `sudo tierlock run` on a packaged host runs within the host's own tier.
const DefaultConfigFile = "/etc/default/tierlock"

// configEnv names the variable that points at another settings file (as --config does).
const configEnv = "TIERLOCK_CONFIG"

// maxConfigSize bounds the settings file: the shipped one is 2 KiB.
const maxConfigSize = 64 << 10

// configPrefixes are the names taken from the settings file: tierlock's own and Consul's. Any
// other (RUBYOPT, LD_PRELOAD, PATH) would reach the command tierlock runs as root.
var configPrefixes = []string{"TIERLOCK_", "CONSUL_"}

// configSource is what applyConfig needs from the process: its environment, its effective uid
// and its files. main passes the process's own (see osConfigSource); tests pass maps and an
// fstest.MapFS.
type configSource struct {
	lookup func(string) (string, bool)
	setenv func(string, string) error
	euid   int
	// stat is looked at before open, so that a device is never opened; what counts is the
	// opened file's own Stat.
	stat func(string) (fs.FileInfo, error)
	open func(string) (fs.File, error)
}

// osConfigSource is the process's own environment and files. The file is opened without
// blocking (a FIFO does not wait for a writer) and without becoming the controlling terminal;
// symlinks are followed, as systemd follows them, and the file checked is the one opened.
func osConfigSource() configSource {
	return configSource{
		lookup: os.LookupEnv, setenv: os.Setenv, euid: os.Geteuid(), stat: os.Stat,
		open: func(path string) (fs.File, error) {
			return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
		},
	}
}

// configPath returns the settings file named by --config or TIERLOCK_CONFIG, and whether it
// was named: a named file must exist, the default one may be absent. --config counts only as
// a flag of tierlock's command (see commandFlags): after the command's first argument every
// word is the command's, as in `tierlock run chef-client --config client.rb`.
func configPath(args []string, cmds []*cli.Command, lookup func(string) (string, bool)) (string, bool, error) {
	path, named := "", false
	for _, f := range commandFlags(args, cmds) {
		if f.name != "config" {
			continue
		}
		if !f.hasValue || f.value == "" {
			return "", false, fmt.Errorf("--config: a file name is required")
		}
		path, named = f.value, true // the last one given wins, as for every flag
	}
	if named {
		return path, true, nil
	}
	if v, ok := lookup(configEnv); ok && v != "" {
		return v, true, nil
	}
	return DefaultConfigFile, false, nil
}

type givenFlag struct {
	name, value string
	hasValue    bool
}

// commandFlags returns the flags given to the command named in args, read as urfave/cli reads
// them (with Go's flag package): after the command's name, up to "--" or the first argument
// that is not a flag; a flag that is not a boolean takes the next argument as its value
// unless it has one after =. An unknown flag ends the list: cli refuses the line anyway.
func commandFlags(args []string, cmds []*cli.Command) []givenFlag {
	// tierlock's own flags (--help, --version) come before the command's name and take no value.
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" && args[i] != "--" {
		i++
	}
	if i == len(args) {
		return nil
	}
	var cmd *cli.Command
	for _, c := range cmds {
		if c.HasName(args[i]) {
			cmd = c
		}
	}
	if cmd == nil {
		return nil
	}
	known := map[string]bool{"help": true, "h": true} // true: boolean; cli adds --help to every command
	for _, f := range cmd.Flags {
		_, boolean := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			known[n] = boolean
		}
	}
	var given []givenFlag
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		arg := rest[j]
		if arg == "--" || arg == "-" || !strings.HasPrefix(arg, "-") {
			break
		}
		name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
		name, value, hasValue := strings.Cut(name, "=")
		boolean, ok := known[name]
		if !ok {
			break
		}
		if !hasValue && !boolean && j+1 < len(rest) {
			j++
			value, hasValue = rest[j], true
		}
		given = append(given, givenFlag{name: name, value: value, hasValue: hasValue})
	}
	return given
}

// loadConfig is applyConfig as main runs it: a settings file that hangs (a stuck network
// file system) cannot make tierlock deaf to SIGINT and SIGTERM, which main catches from the
// start. Its errors carry their exit code: 78, or 75 when stopped by a signal (nothing ran).
func loadConfig(args []string, cmds []*cli.Command, src configSource, sigs <-chan os.Signal) error {
	done := make(chan error, 1)
	go func() { done <- applyConfig(args, cmds, src) }()
	select {
	case err := <-done:
		if err != nil {
			return refuse(err)
		}
		return nil
	case s := <-sigs:
		return fmt.Errorf("%w: %s while reading the settings file", runner.ErrStopped, s)
	}
}

// applyConfig reads the settings file and puts each of its variables into the environment,
// unless the environment already has it: the environment and then the flags override the file,
// as they do for the unit (whose Environment= lines win over its EnvironmentFile).
func applyConfig(args []string, cmds []*cli.Command, src configSource) error {
	path, named, err := configPath(args, cmds, src.lookup)
	if err != nil {
		return err
	}
	text, err := readConfig(path, named, src)
	if err != nil || text == "" {
		return err
	}
	vars, err := parseSettings(path, text)
	if err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(vars))
	// Looked up before any is set: the environment tierlock was started with wins.
	var set []string
	for _, n := range names {
		if _, ok := src.lookup(n); !ok {
			set = append(set, n)
		}
	}
	for _, n := range set {
		if err := src.setenv(n, vars[n]); err != nil {
			return fmt.Errorf("settings file %s: %s: %w", path, n, err)
		}
	}
	return nil
}

// readConfig returns the settings file's text, "" for an absent default file. Only a regular
// file of at most maxConfigSize is read; as root, only one owned by root that group and
// others cannot write, since what it says runs as root.
func readConfig(path string, named bool, src configSource) (string, error) {
	if path == os.DevNull {
		return "", nil // names no settings file: how tests and tools run tierlock on a configured host
	}
	fi, err := src.stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !named {
			return "", nil
		}
		return "", fmt.Errorf("settings file %s: %w", path, unwrapPath(err))
	}
	if err := checkConfigFile(path, fi, src.euid); err != nil {
		return "", err
	}
	f, err := src.open(path)
	if err != nil {
		return "", fmt.Errorf("settings file %s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	// The file read is the one opened: checked again, in case the name changed hands.
	if fi, err = f.Stat(); err != nil {
		return "", fmt.Errorf("settings file %s: %w", path, unwrapPath(err))
	}
	if err := checkConfigFile(path, fi, src.euid); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return "", fmt.Errorf("settings file %s: %w", path, unwrapPath(err))
	}
	if len(b) > maxConfigSize {
		return "", fmt.Errorf("settings file %s: over %d bytes", path, maxConfigSize)
	}
	return string(b), nil
}

// checkConfigFile refuses what is not a small regular file, and as root one that another
// user could have written.
func checkConfigFile(path string, fi fs.FileInfo, euid int) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("settings file %s: a %s, not a regular file", path, fileKind(fi.Mode()))
	}
	if fi.Size() > maxConfigSize {
		return fmt.Errorf("settings file %s: %d bytes, over the %d a settings file may have", path, fi.Size(), maxConfigSize)
	}
	if euid != 0 {
		return nil
	}
	uid := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid = int(st.Uid)
	}
	if perm := fi.Mode().Perm(); uid != 0 || perm&0o022 != 0 {
		return fmt.Errorf("settings file %s: owned by uid %d with mode %04o: as root, tierlock reads only a file owned by root "+
			"that group and others cannot write (chown root %s; chmod go-w %s)", path, uid, perm, path, path)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// unwrapPath drops the path a *fs.PathError repeats: the message names it once.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseSettings reads the settings file's text as systemd's EnvironmentFile= does (see
// internal/envfile): the last of a name given twice wins. Only TIERLOCK_ and CONSUL_ names are
// taken. An error names the file, the line and at most the name; never a value, which may be
// a token.
func parseSettings(path, text string) (map[string]string, error) {
	vars, err := envfile.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	for _, v := range vars {
		if !slices.ContainsFunc(configPrefixes, func(p string) bool { return strings.HasPrefix(v.Name, p) }) {
			return nil, fmt.Errorf("%s:%d: %s: only TIERLOCK_ and CONSUL_ names are taken from the settings file", path, v.Line, v.Name)
		}
	}
	return envfile.Last(vars), nil
}
