package lock

import (
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// Queue holder names are checked when read, like slot holders: an invalid one is suspect,
// named by its key, never a waiter, and (the queue being only an order) stops no run.
func TestSnapshotQueueNames(t *testing.T) {
	base := "chef/prod/web/"
	for _, tc := range []struct {
		name, holder string
		valid        bool
	}{
		{"plain", "web-3.prod", true},
		{"escape", "q\x1b]0;owned\x07", false},
		{"perfdata", "q | evil=1;2;3", false},
		{"newline", "q\nTIERLOCK OK", false},
		{"slash", "a/b", false},
		{"dot", "..", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := newSnapshot("prod/web", 1, OrderConverged, api.KVPairs{
				{Key: base + "queue/" + tc.holder, Value: []byte(`{"holder":"x"}`), Session: "s", CreateIndex: 5},
			}, base)
			if tc.valid {
				if len(snap.Queue) != 1 || snap.Queue[0].Holder != tc.holder || len(snap.Problems) != 0 {
					t.Errorf("queue %v, problems %v; want one waiter %q", snap.Queue, snap.Problems, tc.holder)
				}
				return
			}
			if len(snap.Queue) != 0 {
				t.Errorf("an invalid name is a waiter: %v", snap.Queue)
			}
			if len(snap.Problems) != 0 || len(snap.Suspect) != 1 || !strings.Contains(snap.Suspect[0].Error(), "queue holder") {
				t.Errorf("problems %v, suspect %v; want no problem and one suspect naming the queue holder", snap.Problems, snap.Suspect)
			}
		})
	}
}
