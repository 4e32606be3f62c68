//go:build systemtest

package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// container is a booted systemd-nspawn container. It shares the host's network (only
// loopback is used), and is not registered with a host systemd (there may be none):
// --register=no --keep-unit.
type container struct {
	dir    string    // its root directory
	nspawn *exec.Cmd // systemd-nspawn
	done   chan struct{}
	init   int // the container's PID 1 in the host's PID namespace
	log    *os.File
}

// boot starts the container in dir and waits until its systemd reports running (or
// degraded, which names the failed units in the error).
func boot(ctx context.Context, dir, logPath string) (*container, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("system: %w", err)
	}
	cmd := exec.Command("systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
		"--console=passive", "--machine=tierlock-system-test", "--directory="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that nothing of it outlives a test killed halfway.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("system: systemd-nspawn: %w", err)
	}
	c := &container{dir: dir, nspawn: cmd, done: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(2 * time.Minute)
	for ; ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop()
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("system: the container did not boot within 2m (init %d):\n%s", c.init, tail(b, 3000))
		}
		select {
		case <-c.done:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("system: systemd-nspawn ended at boot:\n%s", tail(b, 3000))
		default:
		}
		if c.init == 0 {
			// nspawn's first child is an intermediate that clones the container's init and
			// exits: wait for the child that is systemd.
			if pid := childOf(cmd.Process.Pid); pid != 0 {
				if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "systemd" {
					c.init = pid
				}
			}
			continue
		}
		out, _ := c.run(ctx, "systemctl is-system-running")
		switch strings.TrimSpace(out) {
		case "running":
			return c, nil
		case "degraded":
			failed, _ := c.run(ctx, "systemctl --failed --no-legend --plain")
			c.stop()
			return nil, fmt.Errorf("system: the container booted degraded: %s", failed)
		}
	}
}

// childOf is the first child process of pid, 0 if none yet.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// run runs script with /bin/sh in every namespace of the container (nsenter -a), stdin
// empty, and returns its combined output. A script that runs past a minute is killed.
func (c *container) run(ctx context.Context, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(c.init), "-a", "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER="}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// stop powers the container off (systemd-nspawn turns SIGTERM into a clean shutdown of the
// container), kills it after 30 s, and waits for it. Its mounts go with its mount namespace.
func (c *container) stop() error {
	defer c.log.Close()
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(30 * time.Second):
	}
	// SIGKILL to the container's PID 1 ends its whole PID namespace.
	if c.init != 0 {
		_ = syscall.Kill(c.init, syscall.SIGKILL)
	}
	_ = syscall.Kill(-c.nspawn.Process.Pid, syscall.SIGKILL)
	<-c.done
	return errors.New("system: the container did not power off within 30s; killed")
}
