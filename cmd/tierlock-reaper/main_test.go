package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// One real Consul agent for the package, behind a proxy that records the tokens it is sent,
// both started by the first test that needs them; each test works under its own key prefix.
// AWS is a local stand-in (fakeAWS).
var (
	agents  consulagent.Lazy
	proxyMu sync.Mutex
	proxy   *faultproxy.Proxy // the recording proxy, once started
	tokenMu sync.Mutex
	tokens  = map[string]int{} // X-Consul-Token values seen by the proxy
)

func TestMain(m *testing.M) {
	// The fault tests' parallel cases mostly wait on held requests (a stalled one until its
	// request timeout), not on the CPU; an explicit -parallel wins.
	flag.Parse()
	testkit.Parallel(8)
	code := m.Run()
	proxyMu.Lock()
	if proxy != nil {
		proxy.Close()
	}
	proxyMu.Unlock()
	agents.Stop()
	os.Exit(code)
}

// recordingProxy is the proxy in front of the package's agent that records the tokens it is
// sent, started on first use.
func recordingProxy(t testing.TB) *faultproxy.Proxy {
	t.Helper()
	agent, _ := agents.Get(t)
	proxyMu.Lock()
	defer proxyMu.Unlock()
	if proxy == nil {
		proxy = faultproxy.New(agent.Addr)
		proxy.SetRule(func(r *http.Request) int {
			tokenMu.Lock()
			tokens[r.Header.Get("X-Consul-Token")]++
			tokenMu.Unlock()
			return 0
		})
	}
	return proxy
}

// The instances of the fixtures.
const (
	instTerminated   = "i-0a1b2c3d4e5f60718"
	instShuttingDown = "i-0b1b2c3d4e5f60719"
	instRunning      = "i-0c1b2c3d4e5f60720"
	instASGDone      = "i-0d1b2c3d4e5f60721"
	instLifecycle    = "i-0e1b2c3d4e5f60722"
	instBystander    = "i-0f9e8d7c6b5a40312"
	instOtherHook    = "i-0a9e8d7c6b5a40313" // terminating under another team's lifecycle hook
)

// ourHook is the lifecycle hook the function is told to complete (the fixtures' own);
// otherHook is another team's, in asg-terminate-lifecycle-action-other-hook.json.
const (
	ourHook   = "tierlock-free-slots"
	otherHook = "payments-drain"
)

var tiers = []string{"prod/web", "prod/db", "stage/cache"}

// holderOf names the host of an instance, as its slots record it.
func holderOf(instance string) string { return "host-" + instance[len(instance)-4:] }

// takeSlots gives each instance a failed slot in every tier, as a host whose chef run failed
// and which then died would leave them.
func takeSlots(t *testing.T, instances ...string) {
	t.Helper()
	for _, tr := range tiers {
		sem, err := lock.New(agents.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tr, DefaultMax: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, inst := range instances {
			slot, err := sem.Acquire(testkit.Ctx(t), lock.Request{Record: schema.Record{
				Holder: holderOf(inst), InstanceID: inst, RunID: "run-" + inst, Command: "chef-client",
			}})
			if err != nil {
				t.Fatal(err)
			}
			if err := sem.MarkFailed(testkit.Ctx(t), slot, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// heldBy returns, per instance, the tiers where it holds a slot, and checks each tier's
// invariant.
func heldBy(t *testing.T) map[string][]string {
	t.Helper()
	snaps, err := lock.ReadAll(testkit.Ctx(t), agents.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
	out := map[string][]string{}
	for _, s := range snaps {
		for _, rec := range s.Holders {
			out[rec.InstanceID] = append(out[rec.InstanceID], s.Tier)
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

// dump is every key of the test's prefix with value and ModifyIndex, to show nothing changed.
func dump(t *testing.T) string {
	t.Helper()
	d, err := consulagent.Dump(agents.Client(t), testkit.Prefix(t)+"/")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// awsCall is one request the AWS stand-in answered.
type awsCall struct {
	Service string            // from the SigV4 credential scope
	Region  string            // likewise
	Key     string            // the access key that signed it
	Action  string            // GetCallerIdentity, GetParameter, CompleteLifecycleAction
	Params  map[string]string // form fields, or the JSON body's top-level fields
}

// fakeAWS stands in for STS, SSM and Auto Scaling on loopback, reached through the SDK's
// endpoint override (AWS_ENDPOINT_URL). It answers like AWS, including Auto Scaling's
// ValidationError for a lifecycle action completed before.
type fakeAWS struct {
	srv       *httptest.Server
	parameter string // the SSM parameter name it knows
	token     string // the SecureString's value
	mu        sync.Mutex
	calls     []awsCall
	completed map[string]bool // lifecycle action tokens
}

var credentialScope = regexp.MustCompile(`Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request`)

func newFakeAWS(t *testing.T) *fakeAWS {
	f := &fakeAWS{parameter: "/tierlock/consul-token", token: "consul-token-from-ssm", completed: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAWS) URL() string { return f.srv.URL }

func (f *fakeAWS) Calls() []awsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeAWS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := awsCall{Params: map[string]string{}}
	if m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		c.Key, c.Region, c.Service = m[1], m[2], m[3]
	}
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		c.Action = target[strings.LastIndex(target, ".")+1:]
		var fields map[string]any
		_ = json.Unmarshal(body, &fields)
		for k, v := range fields {
			c.Params[k] = fmt.Sprint(v)
		}
	} else {
		form, _ := url.ParseQuery(string(body))
		for k := range form {
			c.Params[k] = form.Get(k)
		}
		c.Action = form.Get("Action")
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()

	switch c.Action {
	case "GetCallerIdentity":
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>`+
			`<Arn>arn:aws:sts::123456789012:assumed-role/tierlock-reaper/tierlock-reaper</Arn><UserId>AROAEXAMPLE:tierlock-reaper</UserId>`+
			`<Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>0f1e2d3c-sts</RequestId></ResponseMetadata></GetCallerIdentityResponse>`)
	case "GetParameter":
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		if c.Params["Name"] != f.parameter {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"__type":"ParameterNotFound","message":"parameter %s not found"}`, c.Params["Name"])
			return
		}
		fmt.Fprintf(w, `{"Parameter":{"Name":%q,"Type":"SecureString","Value":%q,"Version":3}}`, f.parameter, f.token)
	case "CompleteLifecycleAction":
		w.Header().Set("Content-Type", "text/xml")
		f.mu.Lock()
		again := f.completed[c.Params["LifecycleActionToken"]]
		f.completed[c.Params["LifecycleActionToken"]] = true
		f.mu.Unlock()
		if again {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type>`+
				`<Code>ValidationError</Code><Message>No active Lifecycle Action found with instance ID %s</Message></Error>`+
				`<RequestId>0f1e2d3c-asg</RequestId></ErrorResponse>`, c.Params["InstanceId"])
			return
		}
		fmt.Fprint(w, `<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><CompleteLifecycleActionResult/>`+
			`<ResponseMetadata><RequestId>0f1e2d3c-asg</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>`)
	default:
		http.Error(w, "not stood in for: "+c.Action, http.StatusNotImplemented)
	}
}

// env is the environment of the function: AWS through the stand-in with fake static
// credentials, the metadata service disabled and pointed at a dead loopback port, Consul
// through the recording proxy, and nothing from the test's own environment.
func env(t *testing.T, aws *fakeAWS) map[string]string {
	return map[string]string{
		"AWS_REGION":                        "eu-west-1",
		"AWS_ACCESS_KEY_ID":                 "AKIDTIERLOCKTEST",
		"AWS_SECRET_ACCESS_KEY":             "not-a-secret",
		"AWS_SESSION_TOKEN":                 "session-token",
		"AWS_ENDPOINT_URL":                  aws.URL(),
		"AWS_EC2_METADATA_DISABLED":         "true",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
		"AWS_CONFIG_FILE":                   "/nonexistent/aws/config",
		"AWS_SHARED_CREDENTIALS_FILE":       "/nonexistent/aws/credentials",
		"CONSUL_HTTP_ADDR":                  recordingProxy(t).Addr,
		"TIERLOCK_PREFIX":                   testkit.Prefix(t),
		"TIERLOCK_CONSUL_TOKEN_PARAMETER":   aws.parameter,
		"TIERLOCK_LOG_LEVEL":                "info",
		"TIERLOCK_LIFECYCLE_HOOK_NAMES":     ourHook,
	}
}

// checkLog fails the test unless every line is a JSON object carrying one of the request ids.
func checkLog(t *testing.T, log string, requestIDs ...string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if id, _ := m["request_id"].(string); !slices.Contains(requestIDs, id) {
			t.Errorf("log line without a request id of ours (%v): %q", requestIDs, line)
		}
		lines = append(lines, m)
	}
	return lines
}
