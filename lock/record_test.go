package lock

import (
	"testing"

	"github.com/tierlock/tierlock/lock/schema"
)

func TestDecide(t *testing.T) {
	held := map[string]schema.Record{"a": {}, "b": {}}
	tests := []struct {
		name    string
		snap    Snapshot
		holder  string
		want    Decision
		wantStr string
	}{
		{"free", Snapshot{Max: 3, Current: 2, RunningKeys: 2, Holders: held}, "c", Take, "take"},
		{"full", Snapshot{Max: 2, Current: 2, RunningKeys: 2, Holders: held}, "c", Wait, "wait"},
		{"reenter when full", Snapshot{Max: 2, Current: 2, RunningKeys: 2, Holders: held}, "a", Reenter, "re-enter"},
		{"disabled beats reenter", Snapshot{Max: 0, Current: 2, RunningKeys: 2, Holders: held}, "a", Disabled, "disabled"},
		{"unlimited", Snapshot{Max: -1, Current: 500, RunningKeys: 500, Holders: held}, "c", Take, "take"},
		{"current drifted high", Snapshot{Max: 3, Current: 3, RunningKeys: 2, Holders: held}, "c", Wait, "wait"},
		{"running keys drifted high", Snapshot{Max: 3, Current: 0, RunningKeys: 3, Holders: held}, "c", Wait, "wait"},
	}
	for _, tt := range tests {
		if got := tt.snap.Decide(tt.holder, ""); got != tt.want || got.String() != tt.wantStr {
			t.Errorf("%s: Decide = %v, want %v", tt.name, got, tt.want)
		}
	}
}
