package monitor

import (
	"errors"
	"math"
	"testing"
	"unicode/utf8"
)

// Thresholds come from the command line of a Nagios check: whatever they hold, ParseRange must
// not panic, an accepted range must be well formed and read the same once written back (as
// perfdata does), and a refusal wraps ErrRange with a printable message. The seed corpus is
// in testdata/fuzz; `make fuzz` runs it longer.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"3600", "1h", "10:", "~:7200", "@0:60", "10:20", "20:10", "@", "", ":", "1h30m:2h", "-5:-1", "1.5:", ".5", "5.", "~:", "@~:0", "1e3", "NaN", "99999999999999999999999999999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			if !errors.Is(err, ErrRange) || !utf8.ValidString(err.Error()) {
				t.Fatalf("%q: error %q", s, err)
			}
			return
		}
		for _, v := range []float64{r.Start, r.End} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%q accepted as %+v", s, r)
			}
		}
		if !r.StartInf && !r.EndInf && r.Start > r.End {
			t.Fatalf("%q accepted with start above end: %+v", s, r)
		}
		again, err := ParseRange(r.String())
		if err != nil || again != r {
			t.Fatalf("%q is %+v, written back as %q, which reads %+v (%v)", s, r, r.String(), again, err)
		}
	})
}
