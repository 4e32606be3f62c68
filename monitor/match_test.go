package monitor_test

import (
	"testing"

	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

func TestMatch(t *testing.T) {
	rec := func(instance, node string) schema.Record { return schema.Record{InstanceID: instance, Node: node} }
	tests := []struct {
		name   string
		match  monitor.Match
		holder string
		rec    schema.Record
		want   bool
	}{
		{"instance recorded", monitor.ByInstance("i-0abc"), "web-3", rec("i-0abc", ""), true},
		{"other instance", monitor.ByInstance("i-0abc"), "web-3", rec("i-0abd", ""), false},
		{"holder is the instance", monitor.ByInstance("i-0abc"), "i-0abc", rec("", ""), true},
		{"holder is the instance's FQDN", monitor.ByInstance("i-0abc"), "i-0abc.ec2.internal", rec("", ""), true},
		{"holder merely starts like it", monitor.ByInstance("i-0abc"), "i-0abcd", rec("", ""), false},
		{"empty instance matches nothing", monitor.ByInstance(""), "web-3", rec("", ""), false},
		{"holder", monitor.ByHolder("web-3"), "web-3", rec("i-1", ""), true},
		{"other holder", monitor.ByHolder("web-3"), "web-30", rec("", ""), false},
		{"empty holder matches nothing", monitor.ByHolder(""), "", rec("", ""), false},
		{"node", monitor.ByNodes([]string{"web-3", "db-1"}), "x", rec("", "db-1"), true},
		{"node in another case", monitor.ByNodes([]string{"Web-3"}), "x", rec("", "web-3"), true},
		{"no node recorded", monitor.ByNodes([]string{"web-3", ""}), "x", rec("", ""), false},
		{"other node", monitor.ByNodes([]string{"web-3"}), "x", rec("", "web-4"), false},
	}
	for _, tt := range tests {
		if got := tt.match(tt.holder, tt.rec); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
