package monitor

import (
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

func withRollout(s *lock.Snapshot, r schema.Rollout) *lock.Snapshot {
	s.Rollout, s.Policy = r, schema.DefaultPolicy
	return s
}

func TestJudgeRollout(t *testing.T) {
	code := 3
	halted := now.Add(-time.Minute)
	failed := holder(schema.StateFailed, time.Minute, &code)
	failed.Revision, failed.Unhealthy = "B", true
	tests := []struct {
		name    string
		snap    *lock.Snapshot
		state   string
		want    Status
		problem string
	}{
		{"canary young", withRollout(tier("prod/web", 5, nil), schema.Rollout{Revision: "B", State: schema.RolloutRolling, Since: now.Add(-time.Hour)}),
			"canary", OK, ""},
		{"canary stuck", withRollout(tier("prod/web", 5, nil), schema.Rollout{Revision: "B", State: schema.RolloutRolling, Since: now.Add(-3 * time.Hour)}),
			"canary", Warning, "rollout of B: canary without a success for 3h00m"},
		{"halted", withRollout(tier("prod/web", 5, map[string]schema.Record{"web-2": failed}), schema.Rollout{Revision: "B", State: schema.RolloutHalted, HaltedAt: &halted,
			Failures: 1, Failed: []schema.Failure{{Holder: "web-2", ExitCode: &code, Unhealthy: true, At: halted}}}),
			"halted", Critical, "rollout of B halted after 1 failure(s), last web-2 (unhealthy); failed hosts: web-2"},
		{"step baking", withRollout(tier("prod/web", 5, nil), schema.Rollout{Revision: "B", State: schema.RolloutRolling, Step: 1, Succeeded: 2,
			LastSuccess: &halted, Since: now.Add(-time.Hour)}), "step", OK, ""},
		{"rollback", withRollout(tier("prod/web", 5, nil), schema.Rollout{Revision: "A", State: schema.RolloutRolling, Full: true, Since: now,
			Rollbacks: []schema.Rollback{{Holder: "web-7", From: "B", To: "A", At: now.Add(-time.Hour)}}}),
			"full", Warning, "web-7 asked for A after B (1h00m ago)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := Rollout(tt.snap, now); v == nil || v.State != tt.state {
				t.Errorf("state %+v, want %s", v, tt.state)
			}
			tv := judgeTier(tt.snap, now, DefaultThresholds())
			if tv.Status != tt.want || !strings.Contains(strings.Join(tv.Problems, "; "), tt.problem) {
				t.Errorf("%v %q, want %v with %q", tv.Status, tv.Problems, tt.want, tt.problem)
			}
		})
	}
}
