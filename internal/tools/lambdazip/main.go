// Command lambdazip packs a Lambda function's bootstrap binary into the zip Lambda deploys,
// with Go's archive/zip, so `make lambda` needs no zip tool. The entry is named bootstrap,
// is executable (mode 0755: Lambda runs it as is) and has a fixed time, so the same binary
// always gives the same zip.
//
//	go run ./internal/tools/lambdazip -o dist/tierlock-reaper-amd64.zip dist/amd64/bootstrap
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

func main() {
	out := flag.String("o", "", "the zip to write")
	flag.Parse()
	if *out == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: lambdazip -o FUNCTION.zip PATH/TO/bootstrap")
		os.Exit(2)
	}
	if err := pack(*out, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "lambdazip:", err)
		os.Exit(1)
	}
}

// modified is the time stamped on the entry: 1980-01-01, the zip format's epoch.
var modified = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// pack writes a zip at out holding bin as "bootstrap". It writes to a temporary file first,
// so a failure never leaves a truncated zip behind.
func pack(out, bin string) error {
	src, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".lambdazip-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	zw := zip.NewWriter(tmp)
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate, Modified: modified}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
