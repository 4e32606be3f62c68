package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNodeCache(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	c := nodeCache{path: filepath.Join(dir, nodeCacheFile), agent: "127.0.0.1:8500", now: func() time.Time { return now }}
	if _, ok := c.get(); ok {
		t.Fatal("a node name before any was kept")
	}
	if err := c.put("web-1.node"); err != nil {
		t.Fatal(err)
	}
	if node, ok := c.get(); !ok || node != "web-1.node" {
		t.Errorf("get = %q %v, want web-1.node", node, ok)
	}
	other := c
	other.agent = "127.0.0.1:8501"
	if _, ok := other.get(); ok {
		t.Error("another agent's node name was used")
	}
	later := c
	later.now = func() time.Time { return now.Add(nodeCacheAge) }
	if _, ok := later.get(); ok {
		t.Error("a node name kept an hour ago was used")
	}
	earlier := c
	earlier.now = func() time.Time { return now.Add(-time.Minute) }
	if _, ok := earlier.get(); ok {
		t.Error("a node name kept in the future was used")
	}
	if err := c.put("bad name"); err == nil {
		t.Error("kept a node name with a blank")
	}
	for name, content := range map[string]string{
		"junk":        "not a cache line\n",
		"blank node":  "v1 127.0.0.1:8500  1764331200\n",
		"bad version": "v2 127.0.0.1:8500 web-1 1764331200\n",
		"bad time":    "v1 127.0.0.1:8500 web-1 soon\n",
	} {
		if err := os.WriteFile(c.path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if node, ok := c.get(); ok {
			t.Errorf("%s: used %q", name, node)
		}
	}
	// A link is never followed, even to a well-formed file.
	good := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(good, []byte("v1 127.0.0.1:8500 web-1 1764331200\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(c.path)
	if err := os.Symlink(good, c.path); err != nil {
		t.Fatal(err)
	}
	if node, ok := c.get(); ok {
		t.Errorf("followed a link: %q", node)
	}
}
