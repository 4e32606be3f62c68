package runner_test

import (
	"reflect"
	"testing"

	"github.com/tierlock/tierlock/runner"
)

func TestCommandEnv(t *testing.T) {
	environ := []string{"PATH=/bin", "CONSUL_HTTP_TOKEN=s3cret", "CONSUL_HTTP_ADDR=127.0.0.1:8500",
		"CONSUL_HTTP_TOKEN_FILE=/etc/tok", "CONSUL_HTTP_AUTH=ops:hunter2", "CONSUL_HTTP_TOKEN_FILEX=kept", "XCONSUL_HTTP_TOKEN=kept", "EMPTY=", "NOEQUALS"}
	for _, tc := range []struct {
		name string
		pass bool
		want []string
	}{
		{"token removed, the rest kept in order", false, []string{"PATH=/bin", "CONSUL_HTTP_ADDR=127.0.0.1:8500",
			"CONSUL_HTTP_TOKEN_FILEX=kept", "XCONSUL_HTTP_TOKEN=kept", "EMPTY=", "NOEQUALS"}},
		{"--pass-consul-token keeps it", true, environ},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runner.CommandEnv(environ, tc.pass); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CommandEnv = %q, want %q", got, tc.want)
			}
		})
	}
	if got := runner.CommandEnv(nil, false); got == nil || len(got) != 0 {
		t.Errorf("CommandEnv(nil) = %#v: want an empty environment, not nil (nil inherits ours)", got)
	}
}
