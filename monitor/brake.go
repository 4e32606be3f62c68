package monitor

import (
	"fmt"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// NoteText says an operator's change the way a person reads it, e.g. "disabled 2h ago by
// alice on bastion-1: incident 4711". Stored strings in it are raw: print it through the
// sanitiser.
func NoteText(n schema.Note, now time.Time) string {
	var what string
	switch n.Action {
	case "disable":
		what = "disabled"
	case "set-max":
		what = "max_concurrent set to " + n.Value
	case "release":
		what = n.Value + "'s slot released"
	case "forget":
		what = n.Value + " forgotten"
	case "enable":
		what = "enabled (max_concurrent " + n.Value + ")"
	default:
		what = n.Action + " " + n.Value
	}
	by := orUnknown(n.By)
	switch {
	case n.Token != nil && n.Token.Description != "":
		by += fmt.Sprintf(" (token %.8s %q)", n.Token.AccessorID, n.Token.Description)
	case n.Token != nil:
		by += fmt.Sprintf(" (token %.8s)", n.Token.AccessorID)
	}
	s := fmt.Sprintf("%s %s by %s on %s", what, ago(now.Sub(n.At)), by, orUnknown(n.Host))
	if n.Reason != "" {
		s += ": " + n.Reason
	}
	return s
}

func ago(d time.Duration) string {
	if d < 0 {
		return "in the future (" + Age(-d) + " ahead)"
	}
	return Age(d) + " ago"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// judgeBrake describes a disabled tier (who pulled the brake, when and why, when a note says
// so) and warns when it has been disabled longer than th.DisabledWarn (0: never).
func judgeBrake(s *lock.Snapshot, now time.Time, th Thresholds) (text, warn string) {
	if !s.Disabled() {
		return "", ""
	}
	n, ok := s.Notes[schema.NoteMax]
	if !ok || n.Action != "disable" && !(n.Action == "set-max" && n.Value == "0") {
		// Disabled by hand with consul kv put, or before tierlock kept notes.
		text = "disabled (no note: by whom and why unknown)"
		if th.DisabledWarn > 0 {
			return text, text + "; set one with tierlock disable --reason"
		}
		return text, ""
	}
	n.Action = "disable"
	text = NoteText(n, now)
	if th.DisabledWarn > 0 && now.Sub(n.At) > th.DisabledWarn {
		warn = fmt.Sprintf("%s (longer than %s)", text, Age(th.DisabledWarn))
	}
	return text, warn
}
