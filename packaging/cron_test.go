package packaging_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// cronField checks one time field of a crontab line: *, N, N-M, lists, /step, and names for
// months and weekdays.
func cronField(field string, lo, hi int, names []string) error {
	value := func(s string) (int, error) {
		for i, n := range names {
			if strings.EqualFold(s, n) {
				return i + lo, nil
			}
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%q is not in %d-%d", s, lo, hi)
		}
		return n, nil
	}
	for _, part := range strings.Split(field, ",") {
		rng, step, stepped := strings.Cut(part, "/")
		if stepped {
			if n, err := strconv.Atoi(step); err != nil || n < 1 || n > hi {
				return fmt.Errorf("step %q in %q", step, field)
			}
		}
		if rng == "*" {
			continue
		}
		from, to, isRange := strings.Cut(rng, "-")
		a, err := value(from)
		if err != nil {
			return err
		}
		if isRange {
			b, err := value(to)
			if err != nil {
				return err
			}
			if b < a {
				return fmt.Errorf("range %q runs backwards", rng)
			}
		} else if stepped {
			return fmt.Errorf("%q: a step needs * or a range", part)
		}
	}
	return nil
}

// The cron file parses as a /etc/cron.d file: a name cron accepts, environment lines, and
// job lines of five time fields, a user and an absolute command that sh parses; cron would
// turn an unescaped % into a newline, and ignores a last line without one.
func TestCronFile(t *testing.T) {
	path := filepath.Join(repo, "packaging/cron/tierlock")
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(filepath.Base(path)) {
		t.Errorf("cron ignores /etc/cron.d files named like %q", filepath.Base(path))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "\n") {
		t.Error("no newline at the end: cron ignores the last line")
	}
	months := []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	days := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	limits := []struct {
		name   string
		lo, hi int
		names  []string
	}{{"minute", 0, 59, nil}, {"hour", 0, 23, nil}, {"day of month", 1, 31, nil}, {"month", 1, 12, months}, {"day of week", 0, 7, days}}
	env := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\s*=`)
	jobs := 0
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || env.MatchString(line) {
			continue
		}
		jobs++
		f := strings.Fields(line)
		if len(f) < 7 {
			t.Errorf("line %d: want five time fields, a user and a command: %q", i+1, line)
			continue
		}
		for j, l := range limits {
			if err := cronField(f[j], l.lo, l.hi, l.names); err != nil {
				t.Errorf("line %d: %s field: %v", i+1, l.name, err)
			}
		}
		if _, err := user.Lookup(f[5]); err != nil {
			t.Errorf("line %d: user %q: %v", i+1, f[5], err)
		}
		// The command is the rest of the line after the sixth field.
		cmd := regexp.MustCompile(`^(\S+\s+){6}`).ReplaceAllString(line, "")
		if !strings.HasPrefix(f[6], "/") {
			t.Errorf("line %d: command %q is not an absolute path", i+1, f[6])
		}
		if regexp.MustCompile(`(^|[^\\])%`).MatchString(cmd) {
			t.Errorf("line %d: an unescaped %% in the command", i+1)
		}
		if out, err := exec.Command("sh", "-n", "-c", cmd).CombinedOutput(); err != nil {
			t.Errorf("line %d: sh cannot parse the command %q: %v\n%s", i+1, cmd, err, out)
		}
		for _, want := range []string{"/usr/bin/tierlock run", "--splay", "/etc/default/tierlock"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("line %d: the command lacks %q", i+1, want)
			}
		}
	}
	if jobs != 1 {
		t.Errorf("%d job lines, want 1", jobs)
	}
}

// The field checker itself, so that TestCronFile passing means something.
func TestCronField(t *testing.T) {
	for _, tc := range []struct {
		field string
		ok    bool
	}{
		{"*", true}, {"*/15", true}, {"0,15,30,45", true}, {"1-5", true}, {"0-30/10", true},
		{"60", false}, {"*/0", false}, {"*/61", false}, {"5-1", false}, {"x", false}, {"15/5", false}, {"", false},
	} {
		if err := cronField(tc.field, 0, 59, nil); (err == nil) != tc.ok {
			t.Errorf("minute field %q: error %v, want ok %v", tc.field, err, tc.ok)
		}
	}
	if err := cronField("mon-fri", 0, 7, []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}); err != nil {
		t.Errorf("mon-fri: %v", err)
	}
}

// The README shows the job line as shipped.
func TestCronFileInREADME(t *testing.T) {
	b, _ := os.ReadFile(filepath.Join(repo, "packaging/cron/tierlock"))
	readme, _ := os.ReadFile(filepath.Join(repo, "README.md"))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "*/15 ") && !strings.Contains(string(readme), line) {
			t.Errorf("README.md does not show the cron line %q", line)
		}
	}
}
