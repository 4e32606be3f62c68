package faultproxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// The package's real Consul agent, started by the first test that needs it.
var agents consulagent.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	agents.Stop()
	os.Exit(code)
}

// put writes key through a proxy faulting every request with fault, with a client that gives
// up after a second, and reports the client's error and what the agent holds afterwards.
func put(t *testing.T, fault int, key string) (error, string) {
	t.Helper()
	agent, direct := agents.Get(t)
	p := faultproxy.New(agent.Addr)
	defer p.Close()
	p.SetRule(func(*http.Request) int { return fault })
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = p.Addr, "", ""
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, putErr := c.KV().Put(&api.KVPair{Key: key, Value: []byte("v")}, (&api.WriteOptions{}).WithContext(ctx))
	if !p.Settle(30 * time.Second) {
		t.Fatal("the proxy did not let go of the request")
	}
	if p.Injected() != 1 || p.Counts()[name(fault)] != 1 {
		t.Errorf("counts %v, want one %s", p.Counts(), name(fault))
	}
	pair, _, err := direct.KV().Get(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pair == nil {
		return putErr, ""
	}
	return putErr, string(pair.Value)
}

func name(fault int) string {
	if k, ok := faultproxy.Kinds[fault]; ok {
		return k
	}
	return strconv.Itoa(fault)
}

func TestFaults(t *testing.T) {
	for _, tt := range []struct {
		fault   int
		applied bool // Consul applied the write
	}{
		{http.StatusTooManyRequests, false},
		{http.StatusInternalServerError, false},
		{faultproxy.Reset, false},
		{faultproxy.Stall, false},
		{faultproxy.DropAfterCommit, true},
		{faultproxy.LateCommit, true},
		{faultproxy.StallAfterCommit, true},
	} {
		t.Run(name(tt.fault), func(t *testing.T) {
			key := "faultproxy/" + name(tt.fault)
			err, value := put(t, tt.fault, key)
			if err == nil {
				t.Error("the client got an answer")
			}
			if got := value == "v"; got != tt.applied {
				t.Errorf("applied %v, want %v (client error %v)", got, tt.applied, err)
			}
		})
	}
}

// A retargeted proxy keeps its address and sends what comes next to the new target: a host's
// agent restarted under another name, as CONSUL_HTTP_ADDR still finds it.
func TestRetarget(t *testing.T) {
	serve := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return s
	}
	before, after := serve("before"), serve("after")
	p := faultproxy.New(before.Listener.Addr().String())
	defer p.Close()
	get := func() string {
		t.Helper()
		resp, err := http.Get("http://" + p.Addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := get(); got != "before" {
		t.Fatalf("got %q, want before", got)
	}
	p.Retarget(after.Listener.Addr().String())
	if got := get(); got != "after" {
		t.Errorf("after Retarget: got %q, want after", got)
	}
}
