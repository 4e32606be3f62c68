package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// The EventBridge events the reaper acts on: detail-type, and the source that sends it.
const (
	ec2StateChange     = "EC2 Instance State-change Notification"
	asgTerminated      = "EC2 Instance Terminate Successful"
	asgLifecycleAction = "EC2 Instance-terminate Lifecycle Action"

	sourceEC2 = "aws.ec2"
	sourceASG = "aws.autoscaling"

	terminatingTransition = "autoscaling:EC2_INSTANCE_TERMINATING"
)

// MalformedEvent is an event the reaper cannot act on. Returning it makes Lambda retry the
// event and, in the end, hand it to the dead-letter queue, where a person can look; its type
// name is the errorType Lambda reports.
type MalformedEvent struct{ reason string }

func (e *MalformedEvent) Error() string { return "malformed event: " + e.reason }

func malformed(format string, args ...any) error {
	reason := fmt.Sprintf(format, args...)
	// An event may be as large as 256 KiB; its reason goes into one log line.
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason], "") + "..."
	}
	return &MalformedEvent{reason: reason}
}

// maxReason bounds a MalformedEvent's reason.
const maxReason = 1024

// instanceIDPattern is EC2's: "i-" and 8 or 17 hex digits.
var instanceIDPattern = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)

// lifecycle identifies the lifecycle action to complete once the slots are freed.
type lifecycle struct {
	group, hook, token string
}

// action is what an event asks of the reaper, decided from the event alone.
type action struct {
	event      string // detail-type, for the logs
	instanceID string // the instance whose slots to free; "" when the event is ignored
	state      string // the EC2 state, for state-change notifications
	lifecycle  *lifecycle
	ignore     string // why the event is ignored; "" when it is acted on
}

// envelope is the part of an EventBridge event common to all of them.
type envelope struct {
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Detail     json.RawMessage `json:"detail"`
}

// decodeEvent decides what payload asks for. An event of a kind the reaper does not handle is
// ignored; one of a kind it handles but cannot act on (missing or invalid fields), or a
// payload that is not an EventBridge event at all, is a MalformedEvent.
func decodeEvent(payload []byte) (action, error) {
	var env envelope
	if err := strictJSON(payload, &env); err != nil {
		return action{}, malformed("not JSON: %v", err)
	}
	if env.DetailType == "" || env.Source == "" {
		return action{}, malformed("no detail-type or source: not an EventBridge event")
	}
	a := action{event: env.DetailType}
	want := map[string]string{ec2StateChange: sourceEC2, asgTerminated: sourceASG, asgLifecycleAction: sourceASG}[env.DetailType]
	switch {
	case want == "":
		a.ignore = fmt.Sprintf("%q events are not about terminations", env.DetailType)
		return a, nil
	case env.Source != want:
		a.ignore = fmt.Sprintf("source %q, not %s", env.Source, want)
		return a, nil
	}
	switch env.DetailType {
	case ec2StateChange:
		var d struct {
			InstanceID string `json:"instance-id"`
			State      string `json:"state"`
		}
		if err := decodeDetail(env, &d); err != nil {
			return action{}, err
		}
		if d.State == "" {
			return action{}, malformed("%s %s without a state", env.DetailType, env.ID)
		}
		a.state = d.State
		if d.State != "terminated" && d.State != "shutting-down" {
			a.ignore = fmt.Sprintf("state %q is not a termination", d.State)
			return a, nil
		}
		a.instanceID = d.InstanceID
	case asgTerminated:
		var d struct {
			InstanceID string `json:"EC2InstanceId"`
		}
		if err := decodeDetail(env, &d); err != nil {
			return action{}, err
		}
		a.instanceID = d.InstanceID
	case asgLifecycleAction:
		var d struct {
			InstanceID string `json:"EC2InstanceId"`
			Group      string `json:"AutoScalingGroupName"`
			Hook       string `json:"LifecycleHookName"`
			Token      string `json:"LifecycleActionToken"`
			Transition string `json:"LifecycleTransition"`
		}
		if err := decodeDetail(env, &d); err != nil {
			return action{}, err
		}
		if d.Transition != terminatingTransition {
			return action{}, malformed("%s %s has LifecycleTransition %q, want %s", env.DetailType, env.ID, d.Transition, terminatingTransition)
		}
		if d.Group == "" || d.Hook == "" || d.Token == "" {
			return action{}, malformed("%s %s lacks AutoScalingGroupName, LifecycleHookName or LifecycleActionToken", env.DetailType, env.ID)
		}
		a.instanceID, a.lifecycle = d.InstanceID, &lifecycle{group: d.Group, hook: d.Hook, token: d.Token}
	}
	if !instanceIDPattern.MatchString(a.instanceID) {
		return action{}, malformed("%s %s: instance id %q is not an EC2 instance id", env.DetailType, env.ID, a.instanceID)
	}
	return a, nil
}

func decodeDetail(env envelope, v any) error {
	if len(env.Detail) == 0 {
		return malformed("%s %s has no detail", env.DetailType, env.ID)
	}
	if err := strictJSON(env.Detail, v); err != nil {
		return malformed("%s %s: detail: %v", env.DetailType, env.ID, err)
	}
	return nil
}

// strictJSON decodes one JSON object and refuses trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
