package consulclient_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/consulclient"
)

func TestRetryable(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"nil", context.Background(), nil, false},
		{"429", context.Background(), &consulclient.StatusError{Code: 429}, true},
		{"503 wrapped", context.Background(), fmt.Errorf("lock: write: %w", &consulclient.StatusError{Code: 503}), true},
		{"api 500", context.Background(), api.StatusError{Code: 500}, true},
		{"api 403", context.Background(), api.StatusError{Code: 403, Body: "Permission denied"}, false},
		{"refused", context.Background(), &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"reset", context.Background(), fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{"eof", context.Background(), io.ErrUnexpectedEOF, true},
		{"request timeout", context.Background(), context.DeadlineExceeded, true},
		{"caller cancelled", cancelled, &consulclient.StatusError{Code: 503}, false},
		{"unknown CA", context.Background(), x509.UnknownAuthorityError{}, false},
		{"http2 set-up failed", context.Background(), fmt.Errorf("x: %w", errors.New("http2: client conn could not be established")), true},
		{"client certificate refused", context.Background(), &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}, false},
		{"plain", context.Background(), errors.New("lock: invalid stored value"), false},
	}
	for _, tt := range tests {
		if got := consulclient.Retryable(tt.ctx, tt.err); got != tt.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// api.KV.Txn reports a 5xx as a plain string; the client's transport must keep the status.
func TestTxnStatusIsKept(t *testing.T) {
	for _, code := range []int{429, 500, 503} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "No cluster leader", code)
		}))
		t.Setenv("CONSUL_HTTP_ADDR", srv.Listener.Addr().String())
		t.Setenv("CONSUL_HTTP_TOKEN", "")
		client, err := consulclient.New()
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, err = client.KV().Txn(api.KVTxnOps{{Verb: api.KVGet, Key: "x"}}, nil)
		var se *consulclient.StatusError
		if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Body, "No cluster leader") {
			t.Errorf("%d: err = %v, want a StatusError", code, err)
		}
		if !consulclient.Retryable(context.Background(), err) {
			t.Errorf("%d: not retryable", code)
		}
		srv.Close()
	}
}

func TestForbiddenIsNotRetryable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Permission denied", http.StatusForbidden)
	}))
	defer srv.Close()
	t.Setenv("CONSUL_HTTP_ADDR", srv.Listener.Addr().String())
	client, err := consulclient.New()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = client.KV().List("chef/", nil)
	if err == nil || consulclient.Retryable(context.Background(), err) {
		t.Errorf("403: err = %v, retryable %v", err, consulclient.Retryable(context.Background(), err))
	}
}

// The node name comes from /v1/agent/self; an agent that refuses or does not say is an error,
// never a panic (api.Agent.NodeName would panic on a missing name).
func TestNodeName(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		want    string
		wantErr string
	}{
		{"agent says", 200, `{"Config":{"NodeName":"web-3","Datacenter":"dc1"}}`, "web-3", ""},
		{"forbidden", 403, "Permission denied", "", "403"},
		{"no name", 200, `{"Config":{}}`, "", "did not say"},
		{"not json", 200, `<html>`, "", "node name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/agent/self" {
					t.Errorf("asked %s", r.URL.Path)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			cfg := api.DefaultConfig()
			cfg.Address, cfg.Token = srv.Listener.Addr().String(), ""
			client, err := consulclient.FromConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := consulclient.NodeName(context.Background(), client)
			if got != tt.want || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("NodeName = %q, %v; want %q, error containing %q", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRequestTimeout(t *testing.T) {
	for budget, want := range map[time.Duration]time.Duration{
		500 * time.Millisecond: 500 * time.Millisecond, // never more than the budget
		2 * time.Second:        time.Second,            // at least a second
		9 * time.Second:        3 * time.Second,        // a third: room for two more tries
		time.Minute:            10 * time.Second,       // at most 10s
	} {
		if got := consulclient.RequestTimeout(budget); got != want {
			t.Errorf("RequestTimeout(%s) = %s, want %s", budget, got, want)
		}
	}
}

func TestACLProblem(t *testing.T) {
	denied := `Unexpected response code: 403 (Permission denied: token with AccessorID '2b6c' lacks permission 'key:write' on "chef/a/b/current")`
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"not an ACL problem", errors.New("connection refused"), ""},
		{"unknown token", errors.New("Unexpected response code: 403 (ACL not found)"), "consul does not know the token (ACL not found): check CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN"},
		{"one permission", errors.New(denied), `consul refused the token: it lacks key:write on "chef/a/b/current"`},
		{"a transaction's errors, grouped", fmt.Errorf("lock: refused by consul: %s; %s; %s; %s; %s; %s",
			`Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "k1"`,
			`Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "k2"`,
			`Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "k1"`,
			`Permission denied: token with AccessorID 'x' lacks permission 'session:write' on "n"`,
			`Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "k3"`,
			`Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "k4"`),
			`consul refused the token: it lacks key:write on "k1", "k2", "k3", 1 more; session:write on "n"`},
		{"older Consul, no detail", errors.New("Permission denied"), "consul refused the token: permission denied"},
	}
	for _, tt := range tests {
		if got := consulclient.ACLProblem(tt.err); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// A client for a Unix socket keeps this package's transport: api.NewClient would give it one
// of its own, and a 503 would then be a plain error, not a StatusError that retries.
func TestUnixSocketKeepsTheStatus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "http.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "rpc error: No cluster leader", http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = "unix://"+sock, "", ""
	client, err := consulclient.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = client.KV().Txn(api.KVTxnOps{{Verb: api.KVGet, Key: "k"}}, nil)
	var se *consulclient.StatusError
	if !errors.As(err, &se) || se.Code != 503 || !consulclient.Retryable(context.Background(), err) {
		t.Errorf("a 503 over the socket: %v (%T), want a StatusError that is retried", err, err)
	}
}
