package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/tierlock/tierlock/internal/testkit"
)

func invoke(t *testing.T, f *Function, requestID string, payload []byte) (result, error) {
	t.Helper()
	c := lambdacontext.NewContext(testkit.Ctx(t), &lambdacontext.LambdaContext{AwsRequestID: requestID})
	out, err := f.Invoke(c, payload)
	if err != nil {
		return result{}, err
	}
	var res result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("answer %q: %v", out, err)
	}
	return res, nil
}

// Each fixture, acted on in-process against the real agent, with slots of its instance (and a
// bystander's) in several tiers; then delivered again, as EventBridge and Lambda may do.
func TestEventsAgainstConsul(t *testing.T) {
	tests := []struct {
		fixture   string
		instance  string // whose slots are taken beforehand
		freed     bool
		malformed bool
		lifecycle bool
	}{
		{fixture: "ec2-terminated.json", instance: instTerminated, freed: true},
		{fixture: "ec2-shutting-down.json", instance: instShuttingDown, freed: true},
		{fixture: "asg-terminate-successful.json", instance: instASGDone, freed: true},
		{fixture: "asg-terminate-lifecycle-action.json", instance: instLifecycle, freed: true, lifecycle: true},
		{fixture: "ec2-running.json", instance: instRunning},
		{fixture: "asg-launch-successful.json", instance: instBystander},
		{fixture: "malformed.json", instance: instTerminated, malformed: true},
		{fixture: "ec2-terminated-no-instance.json", instance: instTerminated, malformed: true},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.fixture, ".json"), func(t *testing.T) {
			aws := newFakeAWS(t)
			for k, v := range env(t, aws) {
				t.Setenv(k, v)
			}
			takeSlots(t, tt.instance, instBystander)
			before := dump(t)
			var log bytes.Buffer
			f := &Function{Out: &log, Version: "test"}

			res, err := invoke(t, f, "req-1", fixture(t, tt.fixture))
			switch {
			case tt.malformed:
				if !errors.As(err, new(*MalformedEvent)) {
					t.Fatalf("err = %v, want a malformed event", err)
				}
				if after := dump(t); after != before {
					t.Errorf("a malformed event changed Consul:\n%s\n%s", before, after)
				}
			case err != nil:
				t.Fatal(err)
			case tt.freed:
				if len(res.Freed) != len(tiers) || res.InstanceID != tt.instance || res.Ignored != "" {
					t.Errorf("answer %+v, want %d slots of %s freed", res, len(tiers), tt.instance)
				}
				if got := heldBy(t); got[tt.instance] != nil || len(got[instBystander]) != len(tiers) {
					t.Errorf("held after: %v", got)
				}
			default:
				if res.Ignored == "" || len(res.Freed) != 0 {
					t.Errorf("answer %+v, want ignored", res)
				}
				if after := dump(t); after != before {
					t.Errorf("an ignored event changed Consul:\n%s\n%s", before, after)
				}
			}

			// Delivered again: nothing more is freed, and it is not an error.
			again, err := invoke(t, f, "req-2", fixture(t, tt.fixture))
			if !tt.malformed && (err != nil || len(again.Freed) != 0) {
				t.Errorf("second delivery: %+v, %v", again, err)
			}

			var completes []awsCall
			for _, c := range aws.Calls() {
				if c.Action == "CompleteLifecycleAction" {
					completes = append(completes, c)
				}
			}
			if !tt.lifecycle {
				if len(completes) != 0 {
					t.Errorf("lifecycle actions completed for a %s: %v", tt.fixture, completes)
				}
			} else {
				want := map[string]string{
					"Action": "CompleteLifecycleAction", "Version": "2011-01-01", "AutoScalingGroupName": "es-indexer",
					"LifecycleHookName": "tierlock-free-slots", "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
					"InstanceId": instLifecycle, "LifecycleActionResult": "CONTINUE",
				}
				if len(completes) != 2 || !reflect.DeepEqual(completes[0].Params, want) || completes[0].Service != "autoscaling" {
					t.Errorf("lifecycle calls %+v\nwant twice %v", completes, want)
				}
				if res.Lifecycle != "CONTINUE" || again.Lifecycle != "NOT_PENDING" {
					t.Errorf("lifecycle answers %q then %q", res.Lifecycle, again.Lifecycle)
				}
			}
			checkLog(t, log.String(), "req-1", "req-2")
		})
	}
}

// Without a token parameter, the token comes from CONSUL_HTTP_TOKEN and SSM is not asked.
func TestTokenFromEnvironment(t *testing.T) {
	aws := newFakeAWS(t)
	for k, v := range env(t, aws) {
		t.Setenv(k, v)
	}
	t.Setenv("TIERLOCK_CONSUL_TOKEN_PARAMETER", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "token-from-env")
	takeSlots(t, instTerminated)
	var log bytes.Buffer
	f := &Function{Out: &log}
	if res, err := invoke(t, f, "req-1", fixture(t, "ec2-terminated.json")); err != nil || len(res.Freed) != len(tiers) {
		t.Fatalf("%+v, %v", res, err)
	}
	for _, c := range aws.Calls() {
		if c.Action == "GetParameter" {
			t.Errorf("SSM asked: %+v", c)
		}
	}
	tokenMu.Lock()
	seen := tokens["token-from-env"]
	tokenMu.Unlock()
	if seen == 0 {
		t.Error("Consul never got the token from CONSUL_HTTP_TOKEN")
	}
	if strings.Contains(log.String(), "token-from-env") {
		t.Error("the token was logged")
	}
	checkLog(t, log.String(), "req-1")
}

// A token parameter that cannot be read fails every invocation, changing nothing, and is
// tried again on the next one.
func TestTokenParameterMissing(t *testing.T) {
	aws := newFakeAWS(t)
	for k, v := range env(t, aws) {
		t.Setenv(k, v)
	}
	t.Setenv("TIERLOCK_CONSUL_TOKEN_PARAMETER", "/tierlock/no-such-parameter")
	takeSlots(t, instTerminated)
	before := dump(t)
	var log bytes.Buffer
	f := &Function{Out: &log}
	for _, id := range []string{"req-1", "req-2"} {
		if _, err := invoke(t, f, id, fixture(t, "ec2-terminated.json")); err == nil || !strings.Contains(err.Error(), "/tierlock/no-such-parameter") {
			t.Errorf("%s: err = %v, want one naming the parameter", id, err)
		}
	}
	if after := dump(t); after != before {
		t.Errorf("changed Consul:\n%s\n%s", before, after)
	}
	n := 0
	for _, c := range aws.Calls() {
		if c.Action == "GetParameter" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("SSM asked %d times, want once per invocation", n)
	}
	checkLog(t, log.String(), "req-1", "req-2")
}

// Only the hooks named in TIERLOCK_LIFECYCLE_HOOK_NAMES are completed; with none named, none
// is. The instance's slots are freed whatever the hook. A name Auto Scaling could not have
// fails the invocation, changing nothing.
func TestLifecycleHookNames(t *testing.T) {
	tests := []struct {
		name, names, fixture, instance string
		complete                       bool   // CompleteLifecycleAction called
		refused                        string // the invocation fails, naming this
	}{
		{name: "none named", fixture: "asg-terminate-lifecycle-action.json", instance: instLifecycle},
		{name: "blank", names: " , ", fixture: "asg-terminate-lifecycle-action.json", instance: instLifecycle},
		{name: "ours among others", names: "payments-x," + ourHook, fixture: "asg-terminate-lifecycle-action.json", instance: instLifecycle, complete: true},
		{name: "another team's", names: ourHook, fixture: "asg-terminate-lifecycle-action-other-hook.json", instance: instOtherHook},
		{name: "a prefix of ours is not ours", names: "tierlock", fixture: "asg-terminate-lifecycle-action.json", instance: instLifecycle},
		{name: "not a hook name", names: ourHook + ",drain me", fixture: "asg-terminate-lifecycle-action.json", instance: instLifecycle, refused: `"drain me"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aws := newFakeAWS(t)
			for k, v := range env(t, aws) {
				t.Setenv(k, v)
			}
			t.Setenv("TIERLOCK_LIFECYCLE_HOOK_NAMES", tt.names)
			takeSlots(t, tt.instance, instBystander)
			before := dump(t)
			var log bytes.Buffer
			f := &Function{Out: &log, Version: "test"}
			res, err := invoke(t, f, "req-1", fixture(t, tt.fixture))
			var completes []awsCall
			for _, c := range aws.Calls() {
				if c.Action == "CompleteLifecycleAction" {
					completes = append(completes, c)
				}
			}
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), "TIERLOCK_LIFECYCLE_HOOK_NAMES") {
					t.Errorf("err = %v, want one naming %s", err, tt.refused)
				}
				if after := dump(t); after != before || len(completes) != 0 {
					t.Errorf("a refused configuration changed something: %v\n%s\n%s", completes, before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Freed) != len(tiers) || res.InstanceID != tt.instance {
				t.Errorf("answer %+v, want the %d slots of %s freed", res, len(tiers), tt.instance)
			}
			if got := heldBy(t); got[tt.instance] != nil || len(got[instBystander]) != len(tiers) {
				t.Errorf("held after: %v", got)
			}
			switch {
			case tt.complete && (len(completes) != 1 || completes[0].Params["LifecycleHookName"] != ourHook || res.Lifecycle != "CONTINUE"):
				t.Errorf("want our hook completed: %v, answer %q", completes, res.Lifecycle)
			case !tt.complete && (len(completes) != 0 || res.Lifecycle != "NOT_OURS"):
				t.Errorf("want no lifecycle action completed: %v, answer %q", completes, res.Lifecycle)
			}
			if !tt.complete && !strings.Contains(log.String(), "lifecycle action not completed") {
				t.Errorf("the log does not say the action was left alone:\n%s", log.String())
			}
			checkLog(t, log.String(), "req-1")
		})
	}
}
