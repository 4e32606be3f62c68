// Command slotcheck tells the reliability tests' commands whether their host holds its slot:
// `slotcheck ADDR KEY` asks the Consul agent at ADDR for KEY with a consistent read (the
// consul CLI cannot ask for one, and a default read can be stale while a restarted server
// replays its log), and asks again while Consul cannot answer, for up to a minute. Exit 0: the
// key exists; 1: it does not; 2: Consul would not say.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: slotcheck ADDR KEY")
		os.Exit(2)
	}
	u := url.URL{Scheme: "http", Host: os.Args[1], Path: "/v1/kv/" + os.Args[2], RawQuery: "consistent"}
	client := &http.Client{Timeout: 5 * time.Second}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := client.Get(u.String())
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			os.Exit(0)
		case http.StatusNotFound:
			os.Exit(1)
		}
	}
	fmt.Fprintln(os.Stderr, "slotcheck: consul did not answer for a minute")
	os.Exit(2)
}
