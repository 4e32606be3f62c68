// Package safetext is the one sanitiser for strings tierlock did not write itself but prints:
// keys and values read from Consul, which anyone with write access to the KV can fill with
// terminal escapes, newlines and Nagios perfdata. It has no dependencies, so the CLI, the
// judging in monitor/ and the Lambda all print through the same rules.
package safetext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Text returns s safe to print on a terminal or in a log line: every control character (C0
// such as ESC, BEL, CR, LF and TAB; DEL; C1 such as U+009B, which some terminals read as
// CSI), every invalid UTF-8 byte, and the invisible format characters that reorder or hide
// text (bidi overrides, zero-width characters) and line or paragraph separators are shown
// escaped: \x1b, \u009b, \u202e. Everything else, non-ASCII letters included, is unchanged.
// A string with nothing to escape is returned as it is.
func Text(s string) string { return escape(s, false) }

// Plugin is Text for the output of a Nagios plugin, where '|' starts the performance data:
// it is shown as \x7c too, so a stored string can never add perfdata or a line.
func Plugin(s string) string { return escape(s, true) }

// unsafe reports whether r must not be printed as it is.
func unsafe(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
		unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r)
}

func escape(s string, plugin bool) string {
	clean := true
	for i, r := range s {
		if unsafe(r) || (plugin && r == '|') || (r == utf8.RuneError && invalidAt(s, i)) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && (unsafe(r) || (plugin && r == '|')):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// invalidAt reports whether the RuneError at byte i of s is an invalid byte rather than a
// literal U+FFFD.
func invalidAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size <= 1
}

// JSON makes encoded JSON safe to print: encoding/json escapes C0 control characters but
// writes DEL, C1 and format characters as they are, so those are replaced by \u escapes. The
// document stays valid and decodes to the very same values; only its bytes change. Outside
// strings JSON has no such characters, so every replacement is inside a string.
func JSON(doc []byte) []byte {
	s := string(doc)
	clean := true
	for _, r := range s {
		if r >= 0x7f && unsafe(r) {
			clean = false
			break
		}
	}
	if clean {
		return doc
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x7f || !unsafe(r) {
			b.WriteRune(r)
			continue
		}
		if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
			continue
		}
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	return []byte(b.String())
}
