package reliability_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// ca is a certificate authority made for one test.
type ca struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	c := &ca{dir: t.TempDir(), cert: cert, key: key}
	// Alone in its directory, for CONSUL_CAPATH.
	caDir := filepath.Join(c.dir, "ca")
	if err := os.Mkdir(caDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.file = c.write(t, filepath.Join("ca", name+".pem"), "CERTIFICATE", der)
	return c
}

func (c *ca) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(c.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue signs a certificate for a server (names and IPs) or a client, and returns the files
// of the certificate and its key.
func (c *ca) issue(t *testing.T, name string, client bool, dns []string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if client {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage, DNSNames: dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return c.write(t, name+".pem", "CERTIFICATE", der), c.write(t, name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

// tlsServer starts a server with an HTTPS listener whose certificate the CA signed for
// server.dc1.consul and 127.0.0.1; verifyIncoming makes it ask clients for a certificate.
func tlsServer(t *testing.T, c *ca, verifyIncoming bool) *consulagent.Agent {
	cert, key := c.issue(t, "server", false, []string{"server.dc1.consul", "localhost"}, net.IPv4(127, 0, 0, 1))
	return startServer(t, consulagent.Config{HTTPS: true, HCL: []string{fmt.Sprintf(
		`tls { defaults { ca_file = %q, cert_file = %q, key_file = %q }, https { verify_incoming = %v } }`,
		c.file, cert, key, verifyIncoming)}})
}

// Consul's HTTPS listener, with a CA made by the test. CONSUL_CACERT (and CONSUL_TLS_SERVER_NAME,
// CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY) work; a certificate that does not verify (another
// CA, no CA, another name, no client certificate where one is required) fails closed: nothing
// runs, nothing is written, exit 78, and the message says what to fix.
func TestTLS(t *testing.T) {
	t.Parallel()
	good, other := newCA(t, "tierlock-test-ca"), newCA(t, "another-ca")
	plain := tlsServer(t, good, false)
	strict := tlsServer(t, good, true)
	clientCert, clientKey := good.issue(t, "web-1", true, nil)
	strangerCert, strangerKey := other.issue(t, "stranger", true, nil)
	cases := []struct {
		name   string
		server *consulagent.Agent
		env    []string
		fails  string // "" when it works; else what the message says
	}{
		{"CONSUL_CACERT", plain, []string{"CONSUL_CACERT=" + good.file}, ""},
		{"CONSUL_CAPATH", plain, []string{"CONSUL_CAPATH=" + filepath.Dir(good.file)}, ""},
		{"the server's name", plain, []string{"CONSUL_CACERT=" + good.file, "CONSUL_TLS_SERVER_NAME=server.dc1.consul"}, ""},
		{"another CA", plain, []string{"CONSUL_CACERT=" + other.file}, "CONSUL_CACERT"},
		{"no CA: the system's", plain, nil, "CONSUL_CACERT"},
		{"another name", plain, []string{"CONSUL_CACERT=" + good.file, "CONSUL_TLS_SERVER_NAME=consul.example.com"}, "CONSUL_TLS_SERVER_NAME"},
		{"client certificate", strict, []string{"CONSUL_CACERT=" + good.file, "CONSUL_CLIENT_CERT=" + clientCert, "CONSUL_CLIENT_KEY=" + clientKey}, ""},
		{"no client certificate", strict, []string{"CONSUL_CACERT=" + good.file}, "CONSUL_CLIENT_CERT"},
		{"a client certificate of another CA", strict, []string{"CONSUL_CACERT=" + good.file, "CONSUL_CLIENT_CERT=" + strangerCert, "CONSUL_CLIENT_KEY=" + strangerKey}, "CONSUL_CLIENT_CERT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			admin := clientOf(t, tc.server, "")
			rec := newRecorder(t)
			h := newHost(t, "web-1", "https://"+tc.server.HTTPSAddr, tc.env...)
			before := aclDump(t, admin)
			o := h.run(t, append([]string{"run", "--tier", tier, "--consul-timeout", "20s", "--"}, rec.script(tc.server.Addr, "web-1", 0, 0)...)...)
			st := h.run(t, "status")
			ran := rec.starts(t)["web-1"]
			if tc.fails == "" {
				wantExit(t, o, 0)
				wantExit(t, st, 0)
				if ran != 1 {
					t.Errorf("the command ran %d times", ran)
				}
				return
			}
			for _, x := range []*outcome{o, st} {
				if x.code != 78 || !strings.Contains(x.stderr.String(), tc.fails) {
					t.Errorf("want exit 78 naming %s, got %s", tc.fails, x)
				}
				// A refused handshake sometimes shows as a reset (TLS 1.3 finishes the client's
				// side first), which looks like an outage; the next try sees the refusal.
				if n := strings.Count(x.stderr.String(), "retrying"); n > 2 {
					t.Errorf("a certificate problem was retried %d times:\n%s", n, x)
				}
			}
			if ran != 0 {
				t.Error("the command ran")
			}
			if after := aclDump(t, admin); after != before {
				t.Errorf("Consul changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}
