package main

import (
	"reflect"
	"testing"
)

func TestCompleting(t *testing.T) {
	const gbc = "--generate-bash-completion"
	for _, tc := range []struct {
		args    []string
		request bool
		ask     []string
	}{
		{[]string{"tierlock", "run", gbc}, true, []string{"tierlock", "run", gbc}},
		{[]string{"tierlock", gbc}, true, []string{"tierlock", gbc}},
		{[]string{"tierlock", "run", "--tier", "t/tab", "--", "sh", "-c", "touch x", gbc}, true, nil},
		{[]string{"tierlock", "run", "--", "", gbc}, true, nil},                          // run -- <TAB>
		{[]string{"tierlock", "--", "", gbc}, true, nil},                                 // tierlock -- <TAB>
		{[]string{"tierlock", "run", "--", gbc}, true, []string{"tierlock", "run", gbc}}, // run --<TAB>
		{[]string{"tierlock", "run", "--ti", gbc}, true, []string{"tierlock", "run", "--ti", gbc}},
		{[]string{"tierlock", "run", "--", "x", "--", gbc}, true, nil},
		{[]string{"tierlock", "run", gbc, "x"}, false, nil},
		{[]string{"tierlock", "run", "--", "x"}, false, nil},
		{[]string{"tierlock"}, false, nil},
		{[]string{gbc}, false, nil},
	} {
		request, ask := completing(tc.args)
		if request != tc.request || !reflect.DeepEqual(ask, tc.ask) {
			t.Errorf("completing(%q) = %v, %q; want %v, %q", tc.args, request, ask, tc.request, tc.ask)
		}
	}
}
