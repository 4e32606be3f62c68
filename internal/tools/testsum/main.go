// Command testsum reads `go test -json` on stdin and prints what `go test` prints without it:
// each package's result, and the output of every test that failed, of a package whose test
// binary failed (a panic, a timeout) and of a build that failed. Then it prints the slowest
// tests, so that a run that took longer than the last one says where its time went.
//
//	go test -json ./... > dist/test/go-test.json; go run ./internal/tools/testsum < dist/test/go-test.json
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	slowest := flag.Int("slowest", 15, "how many of the slowest tests to list (0: none)")
	flag.Parse()
	if err := summarize(os.Stdin, os.Stdout, *slowest); err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(1)
	}
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// timing is one top-level test's wall time.
type timing struct {
	pkg, test string
	seconds   float64
}

// summarize reads the events from r and writes the summary to w.
func summarize(r io.Reader, w io.Writer, slowest int) error {
	tests := map[string][]string{} // package + "\x00" + test -> its output
	pkgOut := map[string][]string{}
	var times []timing
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not an event (the go command's own words): pass it on as it came.
			fmt.Fprintln(w, string(line))
			continue
		}
		key := e.Package + "\x00" + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(w, e.Output)
		case e.Action == "output" && e.Test != "":
			tests[key] = append(tests[key], e.Output)
		case e.Action == "output":
			pkgOut[e.Package] = append(pkgOut[e.Package], e.Output)
		case e.Test != "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			if e.Action == "fail" {
				fmt.Fprint(w, strings.Join(tests[key], ""))
			}
			delete(tests, key)
			if !strings.Contains(e.Test, "/") {
				times = append(times, timing{e.Package, e.Test, e.Elapsed})
			}
		case e.Test == "" && (e.Action == "pass" || e.Action == "skip"):
			for _, o := range pkgOut[e.Package] {
				if strings.HasPrefix(o, "ok") || strings.HasPrefix(o, "?") {
					fmt.Fprint(w, o)
				}
			}
			delete(pkgOut, e.Package)
		case e.Test == "" && e.Action == "fail":
			// The binary's own words (a panic, a timeout), and the output of tests that never
			// ended: a timeout names them.
			fmt.Fprint(w, strings.Join(pkgOut[e.Package], ""))
			for k, out := range tests {
				if strings.HasPrefix(k, e.Package+"\x00") {
					fmt.Fprint(w, strings.Join(out, ""))
					delete(tests, k)
				}
			}
			delete(pkgOut, e.Package)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if slowest <= 0 || len(times) == 0 {
		return nil
	}
	sort.SliceStable(times, func(i, j int) bool { return times[i].seconds > times[j].seconds })
	fmt.Fprintf(w, "\nslowest tests (wall seconds, beside the other tests of their package and the packages go test runs at once):\n")
	for _, t := range times[:min(slowest, len(times))] {
		fmt.Fprintf(w, "%8.1f  %s %s\n", t.seconds, t.pkg, t.test)
	}
	return nil
}
