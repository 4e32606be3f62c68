package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		name      string
		payload   []byte
		instance  string // acted on; "" when ignored or malformed
		lifecycle *lifecycle
		ignored   bool
		malformed bool
	}{
		{name: "ec2 terminated", payload: fixture(t, "ec2-terminated.json"), instance: "i-0a1b2c3d4e5f60718"},
		{name: "ec2 shutting-down", payload: fixture(t, "ec2-shutting-down.json"), instance: "i-0b1b2c3d4e5f60719"},
		{name: "ec2 running", payload: fixture(t, "ec2-running.json"), ignored: true},
		{name: "asg terminate successful", payload: fixture(t, "asg-terminate-successful.json"), instance: "i-0d1b2c3d4e5f60721"},
		{
			name: "asg terminate lifecycle action", payload: fixture(t, "asg-terminate-lifecycle-action.json"), instance: "i-0e1b2c3d4e5f60722",
			lifecycle: &lifecycle{group: "es-indexer", hook: "tierlock-free-slots", token: "87654321-4321-4321-4321-210987654321"},
		},
		{name: "asg launch successful", payload: fixture(t, "asg-launch-successful.json"), ignored: true},
		{name: "truncated JSON", payload: fixture(t, "malformed.json"), malformed: true},
		{name: "terminated without an instance", payload: fixture(t, "ec2-terminated-no-instance.json"), malformed: true},
		{name: "empty", payload: []byte(""), malformed: true},
		{name: "null", payload: []byte("null"), malformed: true},
		{name: "array", payload: []byte(`[{"detail-type":"x"}]`), malformed: true},
		{name: "trailing data", payload: []byte(`{"detail-type":"x","source":"y"} {}`), malformed: true},
		{name: "no detail-type", payload: []byte(`{"source":"aws.ec2","detail":{}}`), malformed: true},
		{name: "other event", payload: []byte(`{"detail-type":"Scheduled Event","source":"aws.events","detail":{}}`), ignored: true},
		{
			name:    "state change from elsewhere",
			payload: []byte(`{"detail-type":"EC2 Instance State-change Notification","source":"my.app","detail":{"instance-id":"i-0a1b2c3d4e5f60718","state":"terminated"}}`),
			ignored: true,
		},
		{
			name:      "state change without state",
			payload:   []byte(`{"detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","detail":{"instance-id":"i-0a1b2c3d4e5f60718"}}`),
			malformed: true,
		},
		{
			name:      "instance id not EC2's",
			payload:   []byte(`{"detail-type":"EC2 Instance Terminate Successful","source":"aws.autoscaling","detail":{"EC2InstanceId":"i-0abc/../x"}}`),
			malformed: true,
		},
		{
			name:      "detail not an object",
			payload:   []byte(`{"detail-type":"EC2 Instance Terminate Successful","source":"aws.autoscaling","detail":"i-0a1b2c3d4e5f60718"}`),
			malformed: true,
		},
		{
			name:      "lifecycle action without a token",
			payload:   []byte(`{"detail-type":"EC2 Instance-terminate Lifecycle Action","source":"aws.autoscaling","detail":{"EC2InstanceId":"i-0a1b2c3d4e5f60718","AutoScalingGroupName":"g","LifecycleHookName":"h","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING"}}`),
			malformed: true,
		},
		{
			name:      "lifecycle action for a launch",
			payload:   []byte(`{"detail-type":"EC2 Instance-terminate Lifecycle Action","source":"aws.autoscaling","detail":{"EC2InstanceId":"i-0a1b2c3d4e5f60718","AutoScalingGroupName":"g","LifecycleHookName":"h","LifecycleActionToken":"t","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING"}}`),
			malformed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := decodeEvent(tt.payload)
			if tt.malformed {
				if !errors.As(err, new(*MalformedEvent)) {
					t.Fatalf("err = %v, want a MalformedEvent", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (a.ignore != "") != tt.ignored {
				t.Errorf("ignore = %q, want ignored %v", a.ignore, tt.ignored)
			}
			if !tt.ignored && a.instanceID != tt.instance {
				t.Errorf("instance %q, want %q", a.instanceID, tt.instance)
			}
			if (a.lifecycle == nil) != (tt.lifecycle == nil) || (a.lifecycle != nil && *a.lifecycle != *tt.lifecycle) {
				t.Errorf("lifecycle %+v, want %+v", a.lifecycle, tt.lifecycle)
			}
		})
	}
}
