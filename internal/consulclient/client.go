// Package consulclient builds the Consul client tierlock's commands use and says which of its
// errors are worth retrying. Address, token and TLS come from api.DefaultConfig (the
// CONSUL_HTTP_* environment variables), never from flags.
package consulclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/answercap"
)

// StatusError is an HTTP answer from Consul that is worth retrying: 429 (rate limited) or
// 5xx ("No cluster leader", a stalled proxy, ...).
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("consul answered %d: %s", e.Code, e.Body)
}

// maxRequestTimeout bounds one Consul request (a blocking query gets its wait on top).
const maxRequestTimeout = 10 * time.Second

// RequestTimeout bounds one Consul request of a command that may retry for budget (its
// --consul-timeout): a third of it, at least a second (never more than the budget), at most
// maxRequestTimeout. A request that hangs so leaves time for two more tries rather than using
// the whole budget up.
func RequestTimeout(budget time.Duration) time.Duration {
	return min(maxRequestTimeout, budget, max(budget/3, time.Second))
}

// New returns a client configured from the environment, as `consul` itself is.
func New() (*api.Client, error) {
	return FromConfig(api.DefaultConfig())
}

// FromConfig returns a client for cfg (api.DefaultConfig with changes, such as a token read
// from elsewhere), with the same handling of errors as New.
func FromConfig(cfg *api.Config) (*api.Client, error) {
	if path, ok := strings.CutPrefix(cfg.Address, "unix://"); ok && cfg.Transport != nil {
		// api.NewClient gives a unix:// address an HTTP client of its own, in place of the
		// one built here: the status and answer-size checks below would be lost. Dial the
		// socket from this client instead, and give api an address it leaves alone.
		cfg.Transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		cfg.Address, cfg.Scheme = "localhost", "http"
	}
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	// api.KV.Txn turns every unexpected status into a plain error string; seeing the status
	// here, before api does, keeps 429 and 5xx distinguishable from a refusal such as 403.
	st := statusTransport{next: hc.Transport}
	if ht, ok := hc.Transport.(*http.Transport); ok && ht.TLSClientConfig != nil {
		st.tls = ht.TLSClientConfig.Clone()
	}
	hc.Transport = st
	cfg.HttpClient = hc
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return client, nil
}

type statusTransport struct {
	next http.RoundTripper
	tls  *tls.Config // the client's, for probe
}

func (t statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		// A refused handshake may also show as HTTP/2's "client conn could not be established"
		// (the alert swallowed): probe for the server's verdict then too.
		if req.URL.Scheme == "https" && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
			strings.Contains(err.Error(), "http2: client conn could not be established")) {
			if refused := t.probe(req); refused != nil {
				return nil, fmt.Errorf("%w (the request met: %v)", refused, err)
			}
		}
		return nil, err
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	if limit, ok := answercap.Limit(req.Context()); ok {
		if resp.ContentLength > limit {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrAnswerTooLarge, resp.ContentLength, limit)
		}
		resp.Body = &limitedBody{body: resp.Body, left: limit}
	}
	return resp, nil
}

// ErrAnswerTooLarge is the error of a request whose answer exceeded the limit its context
// carries (WithAnswerLimit).
var ErrAnswerTooLarge = answercap.ErrTooLarge

// WithAnswerLimit asks the clients of this package to read at most limit bytes of the answer
// to a request made with ctx (answercap.WithLimit).
func WithAnswerLimit(ctx context.Context, limit int64) context.Context {
	return answercap.WithLimit(ctx, limit)
}

// limitedBody fails the read past its limit rather than truncating quietly: a truncated
// answer must never be taken for the whole.
type limitedBody struct {
	body io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, ErrAnswerTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left+1] // one more byte: reaching it means there is more than the limit
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, ErrAnswerTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.body.Close() }

// probe connects to the request's host as the client does and waits a moment for the
// server's verdict on the handshake. With TLS 1.3 a server that refuses the client's
// certificate (or its lack of one) says so only after the client has finished its side, so a
// request often meets a reset instead of the refusal; the probe reads the refusal (a TLS
// alert, "remote error"), or returns nil when there is none to read.
func (t statusTransport) probe(req *http.Request) error {
	if t.tls == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(req.Context(), time.Second)
	defer cancel()
	d := tls.Dialer{Config: t.tls.Clone()}
	conn, err := d.DialContext(ctx, "tcp", req.URL.Host)
	if err != nil {
		return remoteTLSError(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	return remoteTLSError(err)
}

// remoteTLSError returns err if it is a TLS alert from the server, else nil.
func remoteTLSError(err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		return err
	}
	return nil
}

// Retryable reports whether err is a Consul failure that may go away: a connection refused
// or reset, a request timeout, a 429 or a 5xx. ctx is the caller's: once it is done, nothing
// is retryable.
func Retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return true
	}
	var ae api.StatusError
	if errors.As(err, &ae) {
		return ae.Code == http.StatusTooManyRequests || ae.Code >= 500
	}
	// A certificate that does not verify is a configuration error: retrying cannot help.
	var certErr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	if errors.As(err, &certErr) || errors.As(err, &hostErr) || errors.As(err, &authErr) {
		return false
	}
	if remoteTLSError(err) != nil {
		return false // a TLS alert: Consul refused our certificate (or our lack of one)
	}
	var opErr *net.OpError
	// HTTP/2 over TLS reports a connection that failed while being set up with this text
	// alone (Consul closing it, or a TLS alert it swallowed); the next try shows the cause.
	if strings.Contains(err.Error(), "http2: client conn could not be established") {
		return true
	}
	return errors.As(err, &opErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// lacks is how Consul names a missing permission (acl.PermissionDeniedError).
var lacks = regexp.MustCompile(`lacks permission '([^']+)' on "([^"]*)"`)

// ACLProblem says in one sentence why Consul refused a request for its ACLs, naming the
// permissions the token lacks and where, or returns "" when err is no such refusal. It never
// names the token: Consul's messages name tokens by their accessor id, not their secret.
func ACLProblem(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	if strings.Contains(msg, "ACL not found") {
		return "consul does not know the token (ACL not found): check CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN"
	}
	var perms []string
	on := map[string][]string{}
	for _, m := range lacks.FindAllStringSubmatch(msg, -1) {
		if _, ok := on[m[1]]; !ok {
			perms = append(perms, m[1])
		}
		if where := strconv.Quote(m[2]); !slices.Contains(on[m[1]], where) {
			on[m[1]] = append(on[m[1]], where)
		}
	}
	if len(perms) == 0 {
		if strings.Contains(msg, "Permission denied") {
			return "consul refused the token: permission denied"
		}
		return ""
	}
	parts := make([]string, 0, len(perms))
	for _, p := range perms {
		where := on[p]
		if len(where) > 3 {
			where = append(where[:3:3], fmt.Sprintf("%d more", len(on[p])-3))
		}
		parts = append(parts, p+" on "+strings.Join(where, ", "))
	}
	return "consul refused the token: it lacks " + strings.Join(parts, "; ")
}

// TLSProblem says in one sentence what to fix when err is a TLS failure between tierlock and
// Consul, or returns "" when it is not.
func TLSProblem(err error) string {
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var certErr *tls.CertificateVerificationError
	var opErr *net.OpError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &hostErr):
		return fmt.Sprintf("consul's certificate is not valid for the name checked (%v): set CONSUL_TLS_SERVER_NAME "+
			"to a name it is valid for, or use that name in CONSUL_HTTP_ADDR", hostErr)
	case errors.As(err, &authErr):
		return fmt.Sprintf("consul's certificate does not verify (%v): point CONSUL_CACERT (or CONSUL_CAPATH) at "+
			"the CA that signed it", authErr)
	case errors.As(err, &certErr):
		return fmt.Sprintf("consul's certificate does not verify (%v): point CONSUL_CACERT (or CONSUL_CAPATH) at "+
			"the CA that signed it", certErr.Err)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return fmt.Sprintf("consul refused the TLS connection (%v): it wants a client certificate signed by its CA: "+
			"set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY", opErr)
	}
	return ""
}

// NodeName asks the agent the client talks to for its node name (Config.NodeName of
// /v1/agent/self, what api.Agent.NodeName reads), bounded by ctx, which api.Agent.NodeName
// is not.
func NodeName(ctx context.Context, client *api.Client) (string, error) {
	var self struct{ Config struct{ NodeName string } }
	if _, err := client.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return "", fmt.Errorf("consul client: agent node name: %w", err)
	}
	if self.Config.NodeName == "" {
		return "", errors.New("consul client: the agent did not say its node name")
	}
	return self.Config.NodeName, nil
}
