package main

import (
	"errors"
	"os/user"
	"testing"
)

// Who a note names: SUDO_USER only for root under sudo; anyone else is their uid's account,
// whatever their environment says.
func TestOperatorName(t *testing.T) {
	accounts := map[string]string{"0": "root", "1001": "mallory"}
	lookup := func(uid string) (*user.User, error) {
		if name, ok := accounts[uid]; ok {
			return &user.User{Uid: uid, Username: name}, nil
		}
		return nil, errors.New("no such user")
	}
	for _, tc := range []struct {
		name      string
		uid, euid int
		env       map[string]string
		want      string
	}{
		{"root under sudo", 0, 0, map[string]string{"SUDO_USER": "alice", "SUDO_UID": "1000", "USER": "root"}, "alice"},
		{"root, SUDO_USER without sudo's SUDO_UID", 0, 0, map[string]string{"SUDO_USER": "alice"}, "root"},
		{"root, no sudo", 0, 0, map[string]string{"USER": "bob"}, "root"},
		{"a user claiming to be alice", 1001, 1001, map[string]string{"SUDO_USER": "alice", "SUDO_UID": "1000", "USER": "mallory"}, "mallory"},
		{"a user claiming another USER", 1001, 1001, map[string]string{"USER": "alice", "LOGNAME": "alice"}, "mallory"},
		{"setuid root: the real uid counts", 1001, 0, map[string]string{"SUDO_USER": "alice", "SUDO_UID": "1000"}, "mallory"},
		{"a uid without an account", 4242, 4242, map[string]string{"SUDO_USER": "alice", "USER": "alice"}, "uid 4242"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := operatorName(tc.uid, tc.euid, func(k string) string { return tc.env[k] }, lookup)
			if got != tc.want {
				t.Errorf("operatorName = %q, want %q", got, tc.want)
			}
		})
	}
}
