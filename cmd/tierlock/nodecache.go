package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// nodeCacheFile, in the state dir, keeps the local agent's node name between runs.
const nodeCacheFile = "consul-node"

// nodeCacheAge is how long a kept node name is used before the agent is asked again.
const nodeCacheAge = time.Hour

// nodeCache is the kept answer of one agent: a line "v1 ADDRESS NODE UNIX-SECONDS".
type nodeCache struct {
	path, agent string
	now         func() time.Time
}

// consulAddress is the agent runs talk to, as api.DefaultConfig reads it.
func consulAddress() string {
	return api.DefaultConfig().Address
}

// get returns the kept node name if it is this agent's and younger than nodeCacheAge. A file
// that is not a plain file of ours, or not in the format, is ignored (the agent is asked).
func (c nodeCache) get() (string, bool) {
	f, err := os.OpenFile(c.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return "", false
	}
	fields := strings.Fields(string(bytes.TrimSpace(b)))
	if len(fields) != 4 || fields[0] != "v1" || fields[1] != c.agent || !validNode(fields[2]) {
		return "", false
	}
	at, err := strconv.ParseInt(fields[3], 10, 64)
	if err != nil {
		return "", false
	}
	age := c.now().Sub(time.Unix(at, 0))
	if age < 0 || age >= nodeCacheAge {
		return "", false
	}
	return fields[2], true
}

// put keeps node for the agent, replacing the file atomically.
func (c nodeCache) put(node string) error {
	if !validNode(node) || strings.ContainsAny(c.agent, " \t\n") {
		return errors.New("node name or agent address not fit to keep")
	}
	return writeFileAtomic(c.path, 0o644, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "v1 %s %s %d\n", c.agent, node, c.now().Unix())
		return err
	})
}

// validNode accepts what Consul accepts as a node name, roughly: printable, no blanks, short.
func validNode(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}
