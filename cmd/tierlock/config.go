package main

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// DefaultConfigFile is the settings file the package ships: tierlock.service reads it as its
// EnvironmentFile and the cron example sources it, so tierlock reads it too, and a person's
// `sudo tierlock run` on a packaged host runs within the host's own tier.
const DefaultConfigFile = "/etc/default/tierlock"

// configEnv names the variable that points at another settings file (as --config does).
const configEnv = "TIERLOCK_CONFIG"

// configSource is what applyConfig needs from the process: its environment and its files.
// main passes os.LookupEnv, os.Setenv and os.ReadFile; tests pass maps.
type configSource struct {
	lookup   func(string) (string, bool)
	setenv   func(string, string) error
	readFile func(string) ([]byte, error)
}

// configPath returns the settings file named by --config (before "--") or TIERLOCK_CONFIG, and
// whether it was named: a named file must exist, the default one may be absent.
func configPath(args []string, lookup func(string) (string, bool)) (string, bool, error) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			break
		}
		switch {
		case arg == "--config" || arg == "-config":
			if i+1 >= len(args) || args[i+1] == "" {
				return "", false, fmt.Errorf("--config: a file name is required")
			}
			return args[i+1], true, nil
		case strings.HasPrefix(arg, "--config=") || strings.HasPrefix(arg, "-config="):
			_, v, _ := strings.Cut(arg, "=")
			if v == "" {
				return "", false, fmt.Errorf("--config: a file name is required")
			}
			return v, true, nil
		}
	}
	if v, ok := lookup(configEnv); ok && v != "" {
		return v, true, nil
	}
	return DefaultConfigFile, false, nil
}

// applyConfig reads the settings file and puts each of its variables into the environment,
// unless the environment already has it: the environment and then the flags override the file,
// as they do for the unit (whose Environment= lines win over its EnvironmentFile).
func applyConfig(args []string, src configSource) error {
	path, named, err := configPath(args, src.lookup)
	if err != nil {
		return err
	}
	data, err := src.readFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !named {
			return nil
		}
		return fmt.Errorf("settings file %s: %w", path, err)
	}
	vars, err := parseEnvFile(path, string(data))
	if err != nil {
		return err
	}
	for _, v := range vars {
		if _, set := src.lookup(v.name); set {
			continue
		}
		if err := src.setenv(v.name, v.value); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, v.line, v.name, err)
		}
	}
	return nil
}

type envVar struct {
	name, value string
	line        int
}

// parseEnvFile reads NAME=value lines, the common ground of systemd's EnvironmentFile= and
// /bin/sh (the shipped file's own header says so): comments and blank lines, values bare or in
// double or single quotes, and nothing a shell would expand. Anything else is an error naming
// the line, because the two readers would disagree on it and the host would run with settings
// nobody wrote.
func parseEnvFile(path, text string) ([]envVar, error) {
	var vars []envVar
	for i, raw := range strings.Split(text, "\n") {
		n := i + 1
		line := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		// The line itself is not quoted back: it may hold a token.
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want NAME=value", path, n)
		}
		if !validEnvName(name) {
			return nil, fmt.Errorf("%s:%d: %s is not a variable name (letters, digits and _, not starting with a digit; no blanks around =)",
				path, n, quoteLine(name))
		}
		v, err := unquoteEnvValue(value)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", path, n, name, err)
		}
		vars = append(vars, envVar{name: name, value: v, line: n})
	}
	return vars, nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// unquoteEnvValue takes a bare value, or one wholly in double or single quotes.
func unquoteEnvValue(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if q := v[0]; q == '"' || q == '\'' {
		if len(v) < 2 || v[len(v)-1] != q {
			return "", fmt.Errorf("unterminated %c quote", q)
		}
		inner := v[1 : len(v)-1]
		if strings.ContainsRune(inner, rune(q)) {
			return "", fmt.Errorf("a %c inside the quotes", q)
		}
		if q == '"' && strings.ContainsAny(inner, "$`\\") {
			return "", fmt.Errorf("$, ` or \\ inside double quotes (sh would expand them, systemd would not)")
		}
		return inner, nil
	}
	if strings.ContainsAny(v, " \t\"'$`\\;&|<>()") {
		return "", fmt.Errorf("a value with blanks or shell characters must be in quotes")
	}
	return v, nil
}

// quoteLine shows a bad name briefly and safely (it may hold anything).
func quoteLine(s string) string {
	const max = 40
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Sprintf("%q", s)
}
