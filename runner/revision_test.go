package runner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRevision(t *testing.T) {
	for _, tt := range []struct {
		name, script, want, says string
		timeout                  time.Duration
	}{
		{"trimmed", `printf '  abc123\n'`, "abc123", "", time.Minute},
		{"fails", `exit 3`, "", "exit status 3", time.Minute},
		{"prints nothing", `true`, "", "printed nothing", time.Minute},
		{"two words", `echo a b`, "", "not printable ASCII", time.Minute},
		{"too much", `head -c 5000 /dev/zero | tr '\0' a`, "", "more than 4096 bytes", time.Minute},
		{"too slow", `sleep 5; echo late`, "", "did not finish within 200ms", 200 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			got, err := Revision(context.Background(), Command{Path: "/bin/sh", Args: []string{"-c", tt.script}, Timeout: tt.timeout})
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("%q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrNoRevision) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("%q, %v; want ErrNoRevision saying %q", got, err, tt.says)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
}
