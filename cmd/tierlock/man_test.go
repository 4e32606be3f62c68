package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The man page is generated from the definitions: every visible command and every flag of
// run is in it, hidden ones are not.
func TestManPage(t *testing.T) {
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb, Build: Build{Version: "1.2.3"}}
	if code := a.Run(context.Background(), []string{"tierlock", "man"}); code != 0 {
		t.Fatalf("tierlock man: exit %d: %s", code, errb.String())
	}
	page := out.String()
	if !strings.HasPrefix(page, ".nh\n.TH tierlock 8") {
		t.Errorf("not a section 8 man page:\n%.200s", page)
	}
	for _, want := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS", "/etc/default/tierlock", "TIERLOCK_TIER"} {
		if !strings.Contains(page, want) {
			t.Errorf("the man page lacks %q", want)
		}
	}
	for _, c := range a.cliApp().Commands {
		heading := ".SH " + c.Name + "\n"
		if c.Hidden == strings.Contains(page, heading) {
			t.Errorf("command %q (hidden %v): section present %v", c.Name, c.Hidden, !c.Hidden)
		}
	}
	for _, f := range runFlags() {
		if name := f.Names()[0]; !strings.Contains(page, `\fB--`+name+`\fP`) {
			t.Errorf("the man page lacks run's --%s", name)
		}
	}
	if strings.Contains(page, "generate-bash-completion") {
		t.Error("the man page shows the hidden completion flag")
	}
}
