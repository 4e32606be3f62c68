// Package consulagent starts and stops a real Consul dev agent on free loopback ports, for
// the tests and the demo. Everything tierlock promises is about Consul's behaviour, so it is
// tested against Consul itself, never a fake KV.
package consulagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is a running `consul agent -dev`.
type Agent struct {
	// Addr is the HTTP API address, host:port on 127.0.0.1.
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Binary finds the consul binary: $TIERLOCK_CONSUL, or bin/consul at the module root (what
// `make consul` builds), or consul on $PATH.
func Binary() (string, error) {
	if p := os.Getenv("TIERLOCK_CONSUL"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "bin", "consul")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			break
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	return "", errors.New("consulagent: no consul binary: run `make consul` (or set TIERLOCK_CONSUL)")
}

// Start runs a dev agent on free loopback ports and waits until it has a leader and answers
// KV requests. Its output goes to logPath (discarded if empty). extra are more agent flags.
func Start(ctx context.Context, bin, logPath string, extra ...string) (*Agent, error) {
	var err error
	// Free ports are found by binding and releasing them, so another process may take one in
	// between; a second and third try make that harmless.
	for try := 0; try < 3; try++ {
		var a *Agent
		if a, err = start(ctx, bin, logPath, extra); err == nil {
			return a, nil
		}
	}
	return nil, err
}

func start(ctx context.Context, bin, logPath string, extra []string) (*Agent, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	args := []string{"agent", "-dev", "-node", "tierlock-dev-" + strconv.Itoa(ports[0]),
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-server-port", strconv.Itoa(ports[2]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-serf-wan-port", "-1",
		"-log-level", "warn"}
	args = append(args, extra...)
	a := &Agent{Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), done: make(chan struct{})}
	a.cmd = exec.Command(bin, args...)
	// Its own process group, so that a Ctrl-C meant for the demo's hosts does not stop the
	// agent under them; Stop ends it.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if logPath != "" {
		if a.log, err = os.Create(logPath); err != nil {
			return nil, err
		}
		a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("consulagent: start %s: %w", bin, err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	if err := a.ready(ctx); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

// ready waits for a leader and a working consistent KV read.
func (a *Agent) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-a.done:
			return fmt.Errorf("consulagent: agent on %s exited while starting", a.Addr)
		case <-ctx.Done():
			return fmt.Errorf("consulagent: agent on %s not ready: %w", a.Addr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if a.get(client, "/v1/status/leader", func(b string) bool { return strings.Contains(b, ":") }) &&
			a.get(client, "/v1/kv/tierlock-ready-probe?consistent", func(string) bool { return true }) {
			return nil
		}
	}
}

func (a *Agent) get(c *http.Client, path string, ok func(string) bool) bool {
	resp, err := c.Get("http://" + a.Addr + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return (resp.StatusCode == 200 || resp.StatusCode == 404) && ok(string(b))
}

// RunTests is the body of a package's TestMain: it starts one agent for the package's tests
// (Binary, Start), gives it and a client for it to run, stops it afterwards and returns run's
// exit code, or 1 (the reason printed) when no agent could be started.
func RunTests(run func(a *Agent, client *api.Client) int) int {
	bin, err := Binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	a, err := Start(context.Background(), bin, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer a.Stop()
	client, err := a.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return run(a, client)
}

// Client returns an API client for the agent, without a token whatever the environment says.
func (a *Agent) Client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = a.Addr, "", ""
	return api.NewClient(cfg)
}

// Stop ends the agent (SIGTERM, then SIGKILL after 5s) and waits for it.
func (a *Agent) Stop() {
	if a.cmd.Process != nil {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	}
	if a.log != nil {
		_ = a.log.Close()
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var held []io.Closer // kept open until all are chosen, so none is picked twice
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		// Serf also needs the UDP port.
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		held = append(held, u)
		ports = append(ports, port)
	}
	return ports, nil
}
