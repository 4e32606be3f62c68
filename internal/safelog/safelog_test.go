package safelog

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestFormatterEscapesStoredText(t *testing.T) {
	evil := "h\x1b]0;owned\x07\nnext | x\u009b"
	for name, inner := range map[string]logrus.Formatter{
		"text": &logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: time.RFC3339},
		"tty":  &logrus.TextFormatter{ForceColors: true},
		"json": &logrus.JSONFormatter{},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			l := Wrap(logrus.New())
			l.Formatter = Formatter{Inner: inner}
			l.Out = &out
			l.WithFields(logrus.Fields{"holder": evil, "n": 3}).WithError(errors.New(evil)).Warn("freed " + evil)
			line := strings.TrimSuffix(out.String(), "\n")
			if strings.Contains(line, "\n") || strings.ContainsAny(line, "\x07\u009b") {
				t.Errorf("raw control characters in %q", line)
			}
			// The tty formatter colours with escapes of its own; none of the stored ones gets through.
			if strings.Contains(line, "\x1b]0") || name != "tty" && strings.Contains(line, "\x1b") {
				t.Errorf("raw ESC in %q", line)
			}
			if name == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil || m["n"] != 3.0 {
					t.Errorf("%s: %v, n = %v", line, err, m["n"])
				}
			}
		})
	}
	if l := Wrap(Wrap(logrus.New())); func() bool { _, ok := l.Formatter.(Formatter).Inner.(Formatter); return ok }() {
		t.Error("Wrap twice wraps twice")
	}
}
