package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tierlock/tierlock/lock/schema"
)

// An event is whatever reaches the function: it must never panic it, an event acted on must
// name one valid EC2 instance (which becomes a match on stored keys), and anything else is
// ignored or refused as a MalformedEvent with a short, printable reason (it is logged, and
// Lambda reports its type). The fixtures are seeds, with the corpus in testdata/fuzz.
func FuzzDecodeEvent(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "events", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","detail":{"instance-id":"i-0a1b2c3d/../x","state":"terminated"}}`))
	f.Add([]byte(`{"detail-type":"EC2 Instance Terminate Successful","source":"aws.autoscaling","detail":{"EC2InstanceId":"i-0a1b2c3d\u0000"}}`))
	f.Add([]byte(`{"detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","id":"` + strings.Repeat("x", 100000) + `","detail":{"state":"terminated"}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := decodeEvent(payload)
		if err != nil {
			var m *MalformedEvent
			if !errors.As(err, &m) || len(err.Error()) > 2048 || !utf8.ValidString(err.Error()) {
				t.Fatalf("%q: error %T %.300q (%d bytes)", payload, err, err, len(err.Error()))
			}
			return
		}
		if a.ignore != "" {
			if a.instanceID != "" || a.lifecycle != nil {
				t.Fatalf("%q ignored, yet with %+v", payload, a)
			}
			return
		}
		if !instanceIDPattern.MatchString(a.instanceID) || schema.ValidateName("instance id", a.instanceID) != nil {
			t.Fatalf("%q acted on for instance %q", payload, a.instanceID)
		}
	})
}
