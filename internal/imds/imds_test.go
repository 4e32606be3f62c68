package imds_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/tierlock/tierlock/internal/imds"
)

func TestInstanceIDUsesV2Token(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" &&
			r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "":
			w.Write([]byte("tok-1"))
		case r.Method == http.MethodGet && r.URL.Path == "/latest/meta-data/instance-id" &&
			r.Header.Get("X-aws-ec2-metadata-token") == "tok-1":
			w.Write([]byte("i-0abc123\n"))
		default:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", srv.URL+"/")
	id, err := imds.InstanceID(context.Background(), imds.Endpoint())
	if err != nil || id != "i-0abc123" {
		t.Fatalf("InstanceID = %q, %v", id, err)
	}
}

func TestInstanceIDRetriesThenFails(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer srv.Close()
	_, err := imds.InstanceID(context.Background(), srv.URL)
	if err == nil {
		t.Fatal("no error from a failing metadata service")
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 3 tries", calls.Load())
	}
}
