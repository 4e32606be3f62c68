package monitor

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrRange is wrapped by every threshold-parsing error.
var ErrRange = errors.New("monitor: invalid threshold")

// Range is a Nagios plugin threshold range ([@][start:][end], "~" for minus infinity), as the
// Monitoring Plugins guidelines define it, over seconds. An endpoint may also be a Go
// duration ("90m", "1h30m"). A value outside the range alerts; with '@', inside does.
type Range struct {
	Start, End       float64
	StartInf, EndInf bool
	Inside           bool
}

var number = regexp.MustCompile(`^-?[0-9]*\.?[0-9]+$|^-?[0-9]+\.$`)

// ParseRange parses a threshold: "3600" or "1h" (alert above), "10:" (alert below), "~:10",
// "10:20" (alert outside), "@10:20" (alert inside).
func ParseRange(s string) (Range, error) {
	text := strings.Join(strings.Fields(s), "")
	var r Range
	body := text
	if strings.HasPrefix(body, "@") {
		r.Inside = true
		body = body[1:]
	}
	if body == "" {
		return Range{}, fmt.Errorf("%w: %q is empty", ErrRange, s)
	}
	start, end, hasColon := strings.Cut(body, ":")
	if !hasColon {
		start, end = "", body
	}
	if start == "" && end == "" {
		return Range{}, fmt.Errorf("%w: %q has neither start nor end", ErrRange, s)
	}
	switch start {
	case "~":
		r.StartInf = true
	case "":
	default:
		v, err := endpoint(start)
		if err != nil {
			return Range{}, fmt.Errorf("%w: %q: start %v", ErrRange, s, err)
		}
		r.Start = v
	}
	if end == "" {
		if !hasColon {
			return Range{}, fmt.Errorf("%w: %q has no end", ErrRange, s)
		}
		r.EndInf = true
	} else {
		v, err := endpoint(end)
		if err != nil {
			return Range{}, fmt.Errorf("%w: %q: end %v", ErrRange, s, err)
		}
		r.End = v
	}
	if !r.StartInf && !r.EndInf && r.Start > r.End {
		return Range{}, fmt.Errorf("%w: %q: start is greater than end", ErrRange, s)
	}
	return r, nil
}

func endpoint(s string) (float64, error) {
	if number.MatchString(s) {
		return strconv.ParseFloat(s, 64)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a number of seconds nor a duration", s)
	}
	return d.Seconds(), nil
}

// Alert reports whether v (in seconds) is a problem for this range.
func (r Range) Alert(v float64) bool {
	in := (r.StartInf || v >= r.Start) && (r.EndInf || v <= r.End)
	return in == r.Inside
}

// String is the range in the plugin syntax, in seconds, for perfdata.
func (r Range) String() string {
	var b strings.Builder
	if r.Inside {
		b.WriteByte('@')
	}
	switch {
	case r.StartInf:
		b.WriteString("~:")
	case r.Start != 0 || r.EndInf:
		b.WriteString(num(r.Start) + ":")
	}
	if !r.EndInf {
		b.WriteString(num(r.End))
	}
	return b.String()
}

func num(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
