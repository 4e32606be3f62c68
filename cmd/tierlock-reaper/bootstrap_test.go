package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// runtimeAPI stands in for the Lambda Runtime API on loopback: it hands out one event per
// GET .../invocation/next and collects what the function POSTs back.
type runtimeAPI struct {
	srv     *httptest.Server
	next    chan invocation
	outcome chan outcome
	mu      sync.Mutex
	initErr string
}

type invocation struct {
	id      string
	payload []byte
}

type outcome struct {
	id        string
	ok        bool   // POSTed to .../response, not .../error
	body      string // the response, or the error document
	errorType string
}

func newRuntimeAPI(t *testing.T) *runtimeAPI {
	r := &runtimeAPI{next: make(chan invocation), outcome: make(chan outcome, 1)}
	const base = "/2018-06-01/runtime/"
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		path := strings.TrimPrefix(req.URL.Path, base)
		switch {
		case req.Method == http.MethodGet && path == "invocation/next":
			select {
			case inv := <-r.next:
				h := w.Header()
				h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
				h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(5*time.Minute).UnixMilli(), 10))
				h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:tierlock-reaper")
				h.Set("Lambda-Runtime-Trace-Id", "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1")
				w.Write(inv.payload)
			case <-req.Context().Done(): // the function was stopped while waiting
			}
		case req.Method == http.MethodPost && strings.HasSuffix(path, "/response"):
			id := strings.TrimSuffix(strings.TrimPrefix(path, "invocation/"), "/response")
			w.WriteHeader(http.StatusAccepted)
			r.outcome <- outcome{id: id, ok: true, body: string(body)}
		case req.Method == http.MethodPost && strings.HasSuffix(path, "/error"):
			id := strings.TrimSuffix(strings.TrimPrefix(path, "invocation/"), "/error")
			w.WriteHeader(http.StatusAccepted)
			r.outcome <- outcome{id: id, body: string(body), errorType: req.Header.Get("Lambda-Runtime-Function-Error-Type")}
		case req.Method == http.MethodPost && path == "init/error":
			r.mu.Lock()
			r.initErr = string(body)
			r.mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
		default:
			t.Errorf("runtime API: unexpected %s %s", req.Method, req.URL.Path)
			http.NotFound(w, req)
		}
	}))
	return r
}

// invoke hands the function one event and waits for its answer.
func (r *runtimeAPI) invoke(t *testing.T, exited <-chan struct{}, id string, payload []byte) outcome {
	t.Helper()
	select {
	case r.next <- invocation{id: id, payload: payload}:
	case <-exited:
		t.Fatalf("%s: the function exited before asking for it", id)
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: the function never asked for its next event", id)
	}
	select {
	case o := <-r.outcome:
		if o.id != id {
			t.Fatalf("answer for %q, want %q", o.id, id)
		}
		return o
	case <-exited:
		t.Fatalf("%s: the function exited without answering", id)
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: no answer", id)
	}
	return outcome{}
}

// buildBootstrap builds the function as `make lambda` does (but with -race, and so cgo, when
// the tests run under -race).
func buildBootstrap(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bootstrap")
	if err := consulagent.Build(".", out, "-X main.version=9.9.9-test -X main.commit=abc1234", "-tags", "lambda.norpc", "-trimpath"); err != nil {
		t.Fatalf("build bootstrap: %v", err)
	}
	return out
}

// The real bootstrap binary, driven through the stand-in Runtime API: several events in one
// process lifetime, AWS calls through the stand-in endpoint, slots in a real Consul.
func TestBootstrapBinary(t *testing.T) {
	bin := buildBootstrap(t)
	aws := newFakeAWS(t)
	rt := newRuntimeAPI(t)
	defer rt.srv.Close()
	takeSlots(t, instTerminated, instShuttingDown, instRunning, instASGDone, instLifecycle, instBystander, instOtherHook)

	fnEnv := env(t, aws)
	// As an operator may write it: blanks, and a hook of ours that never fires.
	fnEnv["TIERLOCK_LIFECYCLE_HOOK_NAMES"] = " " + ourHook + " , spare-hook,"
	proc := startBootstrap(t, bin, rt, fnEnv)
	defer proc.stop()
	stdout, stderr, exited := proc.stdout, proc.stderr, proc.exited

	type step struct {
		id, fixture string
		ok          bool
		freed       string // instance whose slots the answer lists as freed
		lifecycle   string
	}
	steps := []step{
		{id: "11111111-0000-4000-8000-000000000001", fixture: "ec2-running.json", ok: true},
		{id: "11111111-0000-4000-8000-000000000002", fixture: "ec2-shutting-down.json", ok: true, freed: instShuttingDown},
		{id: "11111111-0000-4000-8000-000000000003", fixture: "malformed.json"},
		{id: "11111111-0000-4000-8000-000000000004", fixture: "asg-terminate-lifecycle-action.json", ok: true, freed: instLifecycle, lifecycle: "CONTINUE"},
		{id: "11111111-0000-4000-8000-000000000005", fixture: "asg-terminate-successful.json", ok: true, freed: instASGDone},
		{id: "11111111-0000-4000-8000-000000000006", fixture: "ec2-terminated.json", ok: true, freed: instTerminated},
		{id: "11111111-0000-4000-8000-000000000007", fixture: "asg-launch-successful.json", ok: true},
		// Late and repeated: nothing left to free, the lifecycle action is no longer pending.
		{id: "11111111-0000-4000-8000-000000000008", fixture: "asg-terminate-lifecycle-action.json", ok: true, lifecycle: "NOT_PENDING"},
		{id: "11111111-0000-4000-8000-000000000009", fixture: "ec2-terminated-no-instance.json"},
		// Another team's hook: its slots are freed, its lifecycle action is left to its owner.
		{id: "11111111-0000-4000-8000-000000000010", fixture: "asg-terminate-lifecycle-action-other-hook.json", ok: true, freed: instOtherHook, lifecycle: "NOT_OURS"},
	}
	var ids []string
	for _, s := range steps {
		ids = append(ids, s.id)
		o := rt.invoke(t, exited, s.id, fixture(t, s.fixture))
		if o.ok != s.ok {
			t.Errorf("%s: answered ok=%v (%s), want ok=%v", s.fixture, o.ok, o.body, s.ok)
			continue
		}
		if !o.ok {
			var doc struct{ ErrorMessage, ErrorType string }
			if err := json.Unmarshal([]byte(o.body), &doc); err != nil || doc.ErrorType != "MalformedEvent" ||
				!strings.HasPrefix(doc.ErrorMessage, "malformed event: ") {
				t.Errorf("%s: error document %q", s.fixture, o.body)
			}
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(o.body), &res); err != nil {
			t.Errorf("%s: answer %q: %v", s.fixture, o.body, err)
			continue
		}
		wantFreed := 0
		if s.freed != "" {
			wantFreed = len(tiers)
		}
		if len(res.Freed) != wantFreed || (s.freed != "" && res.InstanceID != s.freed) || res.Lifecycle != s.lifecycle {
			t.Errorf("%s: answer %s", s.fixture, o.body)
		}
	}

	// What is left: the instances that are still running.
	if got := heldBy(t); len(got) != 2 || len(got[instRunning]) != len(tiers) || len(got[instBystander]) != len(tiers) {
		t.Errorf("slots left: %v", got)
	}
	// AWS: the identity and the token once (cold start), the lifecycle action twice.
	var calls []string
	for _, c := range aws.Calls() {
		calls = append(calls, c.Service+":"+c.Action)
		if c.Key != "AKIDTIERLOCKTEST" || c.Region != "eu-west-1" {
			t.Errorf("AWS call not signed with the function's credentials and region: %+v", c)
		}
		if c.Action == "GetParameter" && (c.Params["Name"] != aws.parameter || c.Params["WithDecryption"] != "true") {
			t.Errorf("GetParameter %v", c.Params)
		}
		if c.Action == "CompleteLifecycleAction" && (c.Params["InstanceId"] != instLifecycle || c.Params["LifecycleHookName"] != ourHook ||
			c.Params["LifecycleActionResult"] != "CONTINUE") {
			t.Errorf("CompleteLifecycleAction %v", c.Params)
		}
	}
	want := "sts:GetCallerIdentity ssm:GetParameter autoscaling:CompleteLifecycleAction autoscaling:CompleteLifecycleAction"
	if strings.Join(calls, " ") != want {
		t.Errorf("AWS calls %v\nwant %s", calls, want)
	}
	tokenMu.Lock()
	fromSSM := tokens[aws.token]
	tokenMu.Unlock()
	if fromSSM == 0 {
		t.Error("Consul never got the token from SSM")
	}

	// The log: JSON lines, each with the request id of its invocation; the cold start once.
	lines := checkLog(t, stdout.String(), ids...)
	cold, notOurs := 0, 0
	for _, l := range lines {
		if l["lifecycle_hook"] == otherHook {
			notOurs++
			if l["request_id"] != ids[9] || l["instance_id"] != instOtherHook || l["autoscaling_group"] != "payments" ||
				!strings.Contains(l["msg"].(string), "not completed") || l["our_hooks"] != ourHook+",spare-hook" {
				t.Errorf("line about another team's hook: %v", l)
			}
		}
		if l["msg"] == "cold start" {
			cold++
			if l["identity"] != "arn:aws:sts::123456789012:assumed-role/tierlock-reaper/tierlock-reaper" ||
				l["consul_address"] != "http://"+recordingProxy(t).Addr || l["version"] != "9.9.9-test (abc1234)" || l["request_id"] != ids[0] {
				t.Errorf("cold start line %v", l)
			}
		}
	}
	if cold != 1 {
		t.Errorf("%d cold start lines, want 1", cold)
	}
	if notOurs != 1 {
		t.Errorf("%d log lines about another team's hook, want 1 saying it was left alone", notOurs)
	}
	if strings.Contains(stdout.String()+stderr.String(), aws.token) {
		t.Error("the Consul token was logged")
	}
	select {
	case <-exited:
		t.Errorf("the function exited during its lifetime: %s", stderr.String())
	default:
	}
	rt.mu.Lock()
	if rt.initErr != "" {
		t.Errorf("init error: %s", rt.initErr)
	}
	rt.mu.Unlock()
	t.Logf("bootstrap log (stdout):\n%s", stdout.String())
	if s := stderr.String(); s != "" {
		t.Logf("bootstrap stderr:\n%s", s)
	}
}

// output is where the process writes one of its streams.
// bootstrapProc is the real bootstrap, started as Lambda would start it.
type bootstrapProc struct {
	cmd            *exec.Cmd
	stdout, stderr output
	exited         chan struct{}
}

// startBootstrap starts bin against the stand-in Runtime API with only what Lambda would set
// and fnEnv: nothing inherited. The caller defers stop.
func startBootstrap(t *testing.T, bin string, rt *runtimeAPI, fnEnv map[string]string) *bootstrapProc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(),
		"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.srv.URL, "http://"),
		"AWS_LAMBDA_FUNCTION_NAME=tierlock-reaper", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128", "_HANDLER=bootstrap", "LAMBDA_TASK_ROOT=" + filepath.Dir(bin),
	}
	for k, v := range fnEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Files, not buffers: the process writes them itself, and the test reads them at any time.
	p := &bootstrapProc{cmd: cmd, stdout: logFile(t, "stdout"), stderr: logFile(t, "stderr"), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout.f, p.stderr.f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p
}

// stop ends the process: SIGTERM, then SIGKILL after 10 s.
func (p *bootstrapProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

type output struct{ f *os.File }

func logFile(t *testing.T, name string) output {
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return output{f}
}

func (o output) String() string {
	b, _ := os.ReadFile(o.f.Name())
	return string(b)
}
