//go:build systemtest

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/envfile"
)

// envCase is a case of internal/envfile/testdata/systemd.json: cmd/tierlock and
// internal/envfile check the same table against tierlock's reading of it.
type envCase struct {
	Name, Text string
	Want       map[string]string // what systemd makes of Text; null where its versions differ
	Refused    string            // tierlock refuses Text; "" when it takes it
}

// systemd's own reading of the settings-file grammar, against the table tierlock is tested
// on: each case is a file, read by a transient unit's EnvironmentFile= under the container's
// systemd, and the unit's environment (env -0) is compared with the table's and with
// internal/envfile's reading of the same file. No package is needed: only the tree.
func TestSystemEnvironmentFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (systemd-nspawn): run make test-system as root")
	}
	ctx := context.Background()
	b, err := os.ReadFile("../../internal/envfile/testdata/systemd.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []envCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tarball, _, err := treeTarball(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	root := filepath.Join(work, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unpack(ctx, tarball, root); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "srv/envfile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"empty": ""}
	for i, tc := range cases {
		files[fmt.Sprint(i)] = tc.Text
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := boot(ctx, root, filepath.Join(work, "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("tree and boot: %s", since(start))
	version, _ := c.run(ctx, "systemctl --version | head -1")
	t.Logf("%s", strings.TrimSpace(version))

	// environ is the environment systemd gives a unit whose EnvironmentFile= is /srv/envfile/name.
	environ := func(name string) (map[string]string, error) {
		out, err := c.run(ctx, fmt.Sprintf("systemd-run --quiet --wait -p EnvironmentFile=/srv/envfile/%[1]s "+
			"-p StandardOutput=truncate:/srv/envfile/%[1]s.out -p StandardError=null /usr/bin/env -0", name))
		if err != nil {
			return nil, fmt.Errorf("systemd-run: %v: %s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(dir, name+".out"))
		if err != nil {
			return nil, err
		}
		env := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		return env, nil
	}
	base, err := environ("empty")
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for i, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			env, err := environ(fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			// What the file added to the unit's usual environment (less what changes with
			// every run).
			got := map[string]string{}
			for k, v := range env {
				if k == "INVOCATION_ID" || k == "SYSTEMD_EXEC_PID" {
					continue
				}
				if bv, ok := base[k]; !ok || bv != v {
					got[k] = v
				}
			}
			if tc.Want == nil {
				t.Logf("%s makes %q of %q (systemd versions differ; tierlock refuses it)", strings.TrimSpace(version), got, tc.Text)
				return
			}
			if !maps.Equal(got, tc.Want) {
				t.Errorf("systemd makes %q of %q, the table says %q", got, tc.Text, tc.Want)
			}
			vars, err := envfile.Parse(tc.Text)
			switch {
			case err != nil && tc.Refused == "":
				t.Errorf("envfile.Parse refuses %q: %v", tc.Text, err)
			case err == nil && !maps.Equal(envfile.Last(vars), got):
				t.Errorf("envfile.Parse makes %q of %q, systemd %q", envfile.Last(vars), tc.Text, got)
			}
		})
	}
	t.Logf("%d files read by systemd in %s", len(cases), since(start))
}
