package safetext

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ name, in, text, plugin string }{
		{"plain", "web-3.prod", "web-3.prod", "web-3.prod"},
		{"empty", "", "", ""},
		{"letters of any script", "héllo wörld 東京 ✓", "héllo wörld 東京 ✓", "héllo wörld 東京 ✓"},
		{"window title", "\x1b]0;owned\x07", `\x1b]0;owned\x07`, `\x1b]0;owned\x07`},
		{"colour codes", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, `\x1b[31mred\x1b[0m`},
		{"newlines and CR", "a\nb\r\nc", `a\x0ab\x0d\x0ac`, `a\x0ab\x0d\x0ac`},
		{"tab and NUL", "a\tb\x00", `a\x09b\x00`, `a\x09b\x00`},
		{"DEL", "a\x7fb", `a\x7fb`, `a\x7fb`},
		{"C1 CSI", "a\u009b31mb", `a\u009b31mb`, `a\u009b31mb`},
		{"bidi override", "abc\u202edcb", `abc\u202edcb`, `abc\u202edcb`},
		{"zero width and BOM", "a\u200bb\ufeff", `a\u200bb\ufeff`, `a\u200bb\ufeff`},
		{"line separator", "a\u2028b", `a\u2028b`, `a\u2028b`},
		{"invalid UTF-8", "a\xffb\xc3", `a\xffb\xc3`, `a\xffb\xc3`},
		{"a real U+FFFD stays", "a\ufffdb", "a\ufffdb", "a\ufffdb"},
		{"fake perfdata", "x | evil=1;2;3\nTIERLOCK OK", `x | evil=1;2;3\x0aTIERLOCK OK`, `x \x7c evil=1;2;3\x0aTIERLOCK OK`},
		{"pipe alone", "a|b", "a|b", `a\x7cb`},
		{"backslash is text", `a\x1b`, `a\x1b`, `a\x1b`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Text(tc.in); got != tc.text {
				t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.text)
			}
			if got := Plugin(tc.in); got != tc.plugin {
				t.Errorf("Plugin(%q) = %q, want %q", tc.in, got, tc.plugin)
			}
			for _, out := range []string{Text(tc.in), Plugin(tc.in)} {
				for _, r := range out {
					if unsafe(r) {
						t.Errorf("%q still has %U", out, r)
					}
				}
			}
		})
	}
}

func TestJSON(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"plain", "web-3", `{"v":"web-3"}`},
		{"C0 is json's", "\x1b]0;t\x07", `{"v":"\u001b]0;t\u0007"}`},
		{"DEL", "a\x7fb", `{"v":"a\u007fb"}`},
		{"C1", "a\u009bb", `{"v":"a\u009bb"}`},
		{"bidi", "a\u202eb", `{"v":"a\u202eb"}`},
		{"format character beyond the BMP", "a\U000e0001b", `{"v":"a\udb40\udc01b"}`},
		{"letters stay", "東京|x", `{"v":"東京|x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := json.Marshal(map[string]string{"v": tc.value})
			if err != nil {
				t.Fatal(err)
			}
			got := JSON(enc)
			if string(got) != tc.want {
				t.Errorf("JSON(%s) = %s, want %s", enc, got, tc.want)
			}
			var back map[string]string
			if err := json.Unmarshal(got, &back); err != nil || !reflect.DeepEqual(back, map[string]string{"v": tc.value}) {
				t.Errorf("%s decodes to %q (%v), want %q", got, back, err, tc.value)
			}
		})
	}
}
