package main

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestPack(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bootstrap-build")
	content := []byte("#!/bin/sh\necho not really a Go binary\n")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "f.zip")
	if err := pack(out, bin); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != 1 {
		t.Fatalf("%d entries, want 1", len(zr.File))
	}
	f := zr.File[0]
	if f.Name != "bootstrap" || f.Mode().Perm() != 0o755 || f.Mode().IsDir() {
		t.Errorf("entry %q mode %v, want bootstrap 0755", f.Name, f.Mode())
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content) {
		t.Errorf("content %q", got)
	}

	// The same binary gives the same zip.
	first, _ := os.ReadFile(out)
	if err := pack(out, bin); err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(out); !bytes.Equal(first, second) {
		t.Error("packing twice gave different zips")
	}
	// A missing binary leaves no zip behind.
	if err := pack(filepath.Join(dir, "g.zip"), filepath.Join(dir, "missing")); err == nil {
		t.Error("packed a missing binary")
	}
	if _, err := os.Stat(filepath.Join(dir, "g.zip")); err == nil {
		t.Error("a failed pack left a zip")
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".lambdazip-*")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}
