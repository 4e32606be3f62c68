// Package consulagent starts and stops real Consul agents on free loopback ports, for the
// tests and the demo: a dev agent, a server that keeps its state in a data directory (and
// survives a restart), or a cluster of servers. Everything tierlock promises is about
// Consul's behaviour, so it is tested against Consul itself, never a fake KV.
package consulagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Config describes an agent. The zero value is a dev agent (state in memory).
type Config struct {
	// DataDir, when set, makes a server (not -dev) that keeps its state there, so that it
	// survives Restart.
	DataDir string
	// Servers is how many servers the cluster has (-bootstrap-expect); default 1. Only with
	// DataDir.
	Servers int
	// Client, with DataDir, makes a client agent (not a server), as hosts run: it forwards to
	// the servers it joins (Join).
	Client bool
	// Join are the LAN gossip addresses (Agent.SerfAddr) of other agents to join.
	Join []string
	// HTTPS also opens an HTTPS port (Agent.HTTPSAddr); give the certificates in HCL.
	HTTPS bool
	// LogPath receives the agent's output (discarded if empty), appended to across restarts.
	LogPath string
	// HCL are more configuration snippets (-hcl).
	HCL []string
	// Args are more command-line flags.
	Args []string
}

// Agent is a running Consul agent.
type Agent struct {
	// Addr is the HTTP API address, host:port on 127.0.0.1.
	Addr string
	// HTTPSAddr is the HTTPS API address, with Config.HTTPS.
	HTTPSAddr string
	// SerfAddr is the LAN gossip address, for Config.Join; ServerAddr the server RPC address,
	// as /v1/status/leader names the leader.
	SerfAddr, ServerAddr string
	// Node is the agent's node name.
	Node string
	bin  string
	args []string
	cfg  Config
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
	return Launch(ctx, bin, Config{LogPath: logPath, Args: extra})
}

// Launch runs the agent cfg describes on free loopback ports and waits until it is Ready.
func Launch(ctx context.Context, bin string, cfg Config) (*Agent, error) {
	var err error
	// Free ports are found by binding and releasing them, so another process may take one in
	// between; a second and third try make that harmless.
	for try := 0; try < 3; try++ {
		var a *Agent
		if a, err = prepare(bin, cfg); err != nil {
			return nil, err
		}
		if err = a.start(); err == nil {
			if err = a.Ready(ctx); err == nil {
				return a, nil
			}
			a.Stop()
		}
	}
	return nil, err
}

// prepare chooses the agent's ports and command line without starting it, so that the
// servers of a cluster can be told each other's addresses first. Start it with Restart.
func prepare(bin string, cfg Config) (*Agent, error) {
	n := 3
	if cfg.HTTPS {
		n++
	}
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), SerfAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		ServerAddr: "127.0.0.1:" + strconv.Itoa(ports[2]), Node: "tierlock-" + strconv.Itoa(ports[0]),
		bin: bin, cfg: cfg,
	}
	args := []string{"agent", "-node", a.Node, "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-server-port", strconv.Itoa(ports[2]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-serf-wan-port", "-1",
		"-log-level", "warn"}
	if cfg.HTTPS {
		a.HTTPSAddr = "127.0.0.1:" + strconv.Itoa(ports[3])
		args = append(args, "-https-port", strconv.Itoa(ports[3]))
	}
	switch {
	case cfg.DataDir == "":
		args = append(args, "-dev")
	case cfg.Client:
		args = append(args, "-data-dir", cfg.DataDir)
	default:
		servers := max(cfg.Servers, 1)
		// Elections as fast as dev mode's: the tests kill leaders on purpose.
		args = append(args, "-server", "-data-dir", cfg.DataDir, "-bootstrap-expect", strconv.Itoa(servers),
			"-hcl", "performance { raft_multiplier = 1 }")
	}
	for _, j := range cfg.Join {
		args = append(args, "-retry-join", j)
	}
	if len(cfg.Join) > 0 {
		args = append(args, "-retry-interval", "1s")
	}
	for _, h := range cfg.HCL {
		args = append(args, "-hcl", h)
	}
	a.args = append(args, cfg.Args...)
	return a, nil
}

// start runs the prepared command; it does not wait.
func (a *Agent) start() error {
	a.done = make(chan struct{})
	a.cmd = exec.Command(a.bin, a.args...)
	// Its own process group, so that a Ctrl-C meant for the demo's hosts does not stop the
	// agent under them; Stop ends it.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if a.cfg.LogPath != "" {
		var err error
		if a.log, err = os.OpenFile(a.cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
		a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	}
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("consulagent: start %s: %w", a.bin, err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	return nil
}

// Restart starts the agent again, on the same ports and with the same data directory, after
// Stop or Kill (or for the first time after prepare); it does not wait for Ready.
func (a *Agent) Restart() error {
	if a.Running() {
		return fmt.Errorf("consulagent: agent on %s is still running", a.Addr)
	}
	return a.start()
}

// Running reports whether the agent's process is alive.
func (a *Agent) Running() bool {
	if a.done == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Ready waits, up to a minute, until the agent knows a leader and answers a consistent KV
// read (a 403 of an ACL-enabled agent counts: it answered).
func (a *Agent) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
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
	return (resp.StatusCode == 200 || resp.StatusCode == 404 || resp.StatusCode == 403) && ok(string(b))
}

// Leader returns the server RPC address of the leader this agent knows, "" if none.
func (a *Agent) Leader() string {
	c := &http.Client{Timeout: 2 * time.Second}
	var leader string
	a.get(c, "/v1/status/leader", func(b string) bool { leader = strings.Trim(strings.TrimSpace(b), `"`); return true })
	return leader
}

// Client returns an API client for the agent, without a token whatever the environment says.
func (a *Agent) Client() (*api.Client, error) {
	return a.ClientWithToken("")
}

// ClientWithToken returns an API client for the agent's HTTP address that sends token.
func (a *Agent) ClientWithToken(token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile = a.Addr, "http", token, ""
	cfg.TLSConfig = api.TLSConfig{}
	return api.NewClient(cfg)
}

// PID is the agent's process id while it runs (0 before it started), so that a benchmark
// can read its CPU time and peak memory from /proc.
func (a *Agent) PID() int {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Stop ends the agent (SIGTERM, then SIGKILL after 5s) and waits for it.
func (a *Agent) Stop() { a.end(syscall.SIGTERM) }

// Kill ends the agent with SIGKILL, as a crash would, and waits for it.
func (a *Agent) Kill() { a.end(syscall.SIGKILL) }

func (a *Agent) end(sig syscall.Signal) {
	if a.Running() {
		_ = a.cmd.Process.Signal(sig)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	}
	if a.log != nil {
		_ = a.log.Close()
		a.log = nil
	}
}

// Cluster is a Consul cluster of servers on loopback, each with its data directory.
type Cluster struct {
	Servers []*Agent
}

// StartCluster starts n servers with data directories under dir, joined to each other, and
// waits until each knows the leader. cfg adds to every server's configuration (HCL, Args;
// its LogPath names each server's log, suffixed with its number).
func StartCluster(ctx context.Context, bin, dir string, n int, cfg Config) (*Cluster, error) {
	var err error
	for try := 0; try < 3; try++ {
		var c *Cluster
		if c, err = startCluster(ctx, bin, dir, n, cfg, try); err == nil {
			return c, nil
		}
	}
	return nil, err
}

func startCluster(ctx context.Context, bin, dir string, n int, cfg Config, try int) (*Cluster, error) {
	c := &Cluster{}
	for i := range n {
		sc := cfg
		sc.DataDir, sc.Servers = filepath.Join(dir, fmt.Sprintf("try%d-server%d", try, i)), n
		if cfg.LogPath != "" {
			sc.LogPath = fmt.Sprintf("%s.%d", cfg.LogPath, i)
		}
		a, err := prepare(bin, sc)
		if err != nil {
			return nil, err
		}
		c.Servers = append(c.Servers, a)
	}
	for i, a := range c.Servers {
		for j, b := range c.Servers {
			if i != j {
				a.args = append(a.args, "-retry-join", b.SerfAddr)
			}
		}
		a.args = append(a.args, "-retry-interval", "1s")
	}
	for _, s := range c.Servers {
		if err := s.Restart(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, s := range c.Servers {
		if err := s.Ready(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// Leader returns the server that leads, waiting up to a minute for one (an election).
func (c *Cluster) Leader(ctx context.Context) (*Agent, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		for _, s := range c.Servers {
			if !s.Running() {
				continue
			}
			leader := s.Leader()
			for _, l := range c.Servers {
				if l.ServerAddr == leader && l.Running() {
					return l, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("consulagent: no leader: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops every server.
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		s.Stop()
	}
}

// handedOut is every port freePorts chose in this process. An agent keeps its ports across
// Stop and Restart, and while it is down another agent of the same test binary must not be
// given them.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// portsBelow is where freePorts looks: below the kernel's range of ephemeral ports. The
// kernel gives those to every outgoing connection (and every listen on port 0), so one of
// them, free while an agent is stopped, is taken by a test's HTTP client often enough that
// the agent's restart fails to bind ("exited while starting").
func portsBelow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		if low, err := strconv.Atoi(f[0]); err == nil && low > 12000 {
			return low
		}
	}
	return 32768
}

// freePorts chooses n ports, each free on loopback for TCP and for UDP (Serf needs both), at
// random between 10000 and the ephemeral range, never one it chose before in this process.
func freePorts(n int) ([]int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	var ports []int
	var held []io.Closer // kept open until all are chosen, so none is picked twice
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	const low = 10000
	high := portsBelow()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 10000 {
			return nil, fmt.Errorf("consulagent: no %d free ports in %d-%d", n, low, high-1)
		}
		port := low + rand.IntN(high-low)
		if handedOut.ports[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		held = append(held, l)
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		held = append(held, u)
		handedOut.ports[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// Dump lists every key under prefix with its value and ModifyIndex, one per line, read
// consistently: two equal dumps show that nothing was written in between.
func Dump(c *api.Client, prefix string) (string, error) {
	pairs, _, err := c.KV().List(prefix, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, p := range pairs {
		fmt.Fprintf(&b, "%s=%s@%d\n", p.Key, p.Value, p.ModifyIndex)
	}
	return b.String(), nil
}

// Build builds the command in pkgDir into out, with ldflags, for tests that run it as users
// do; the compiler's output goes to stderr. extra are more flags of `go build` (-tags, say).
// Under `go test -race` it builds with -race too (and cgo, which -race needs), so the race
// detector watches the commands the tests run, not only the tests.
func Build(pkgDir, out, ldflags string, extra ...string) error {
	return BuildIn("", pkgDir, out, ldflags, true, extra...)
}

// BuildIn builds as Build does (race: with -race under `go test -race`) or as BuildPlain does,
// in dir: another checkout of the module, such as an earlier round's tierlock that a
// mixed-version test runs beside today's.
func BuildIn(dir, pkgDir, out, ldflags string, race bool, extra ...string) error {
	return build(dir, pkgDir, out, ldflags, race && RaceEnabled, extra)
}

// BuildPlain is Build without the race detector even under -race: for a test that runs the
// command hundreds of times where the race detector already watches the same code in the
// other tests, and its cost (a tenth of a second of CPU at each start, and twice the CPU
// after) would be most of the test's.
func BuildPlain(pkgDir, out, ldflags string, extra ...string) error {
	return build("", pkgDir, out, ldflags, false, extra)
}

func build(dir, pkgDir, out, ldflags string, race bool, extra []string) error {
	cmd := exec.Command("go", buildArgs(pkgDir, out, ldflags, race, extra)...)
	cmd.Dir = dir
	if race {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		quickRaceExit()
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", pkgDir, err)
	}
	return nil
}

// quickRaceExit drops the race runtime's sleep at exit (atexit_sleep_ms, 1 s by default) from
// the binaries the tests start, unless GORACE says otherwise: the tests start them hundreds of
// times, each second idle. The child processes
// inherit it; a race still makes them exit 66 with its report.
func quickRaceExit() {
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
}

// buildArgs are the arguments of `go` that Build runs.
func buildArgs(pkgDir, out, ldflags string, race bool, extra []string) []string {
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, extra...)
	return append(args, "-ldflags", ldflags, "-o", out, pkgDir)
}
