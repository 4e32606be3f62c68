package monitor

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in     string
		str    string
		alerts []float64
		quiet  []float64
	}{
		{"3600", "3600", []float64{-1, 3600.5, 7200}, []float64{0, 10, 3600}},
		{"1h", "3600", []float64{3601}, []float64{3600}},
		{"1h30m", "5400", []float64{5401}, []float64{5400}},
		{"10:", "10:", []float64{9.9, -5}, []float64{10, 1e9}},
		{"~:10", "~:10", []float64{10.1}, []float64{-1e9, 10}},
		{"10:20", "10:20", []float64{9, 21}, []float64{10, 15, 20}},
		{"@10:20", "@10:20", []float64{10, 15, 20}, []float64{9, 21}},
		{"@~:", "@~:", []float64{0, 1e9, -1e9}, nil},
		{"~:", "~:", nil, []float64{0, 1e9, -1e9}},
		{":10", "10", []float64{-1, 11}, []float64{0, 10}},
		{" 5 : 7 ", "5:7", []float64{8}, []float64{6}},
		{"30m:2h", "1800:7200", []float64{1799, 7201}, []float64{3600}},
	}
	for _, tt := range tests {
		r, err := ParseRange(tt.in)
		if err != nil {
			t.Errorf("ParseRange(%q): %v", tt.in, err)
			continue
		}
		if r.String() != tt.str {
			t.Errorf("ParseRange(%q).String() = %q, want %q", tt.in, r, tt.str)
		}
		for _, v := range tt.alerts {
			if !r.Alert(v) {
				t.Errorf("%q: %v should alert", tt.in, v)
			}
		}
		for _, v := range tt.quiet {
			if r.Alert(v) {
				t.Errorf("%q: %v should not alert", tt.in, v)
			}
		}
	}
	for _, bad := range []string{"", "@", ":", "~", "abc", "20:10", "-5", "1h:30m", "~5:", "5:~", "1..2", "@:", "ten"} {
		if _, err := ParseRange(bad); err == nil {
			t.Errorf("ParseRange(%q) accepted", bad)
		}
	}
}

// TestRangeMatchesMonitoringPlugin checks ParseRange and Alert against the reference
// implementation, Monitoring::Plugin::Range (Debian's libmonitoring-plugin-perl), over a
// generated set of ranges and values.
func TestRangeMatchesMonitoringPlugin(t *testing.T) {
	if exec.Command("perl", "-MMonitoring::Plugin::Range", "-e1").Run() != nil {
		if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
			t.Skip("Monitoring::Plugin::Range is not installed and apt is unavailable here (needs libmonitoring-plugin-perl)")
		}
		t.Fatal("Monitoring::Plugin::Range is missing: run `make test-deps` (installs libmonitoring-plugin-perl)")
	}
	nums := []string{"0", "1", "10", "-10", "2.5", "-0.5", "3600", ".5", "7."}
	var ranges []string
	for _, a := range nums {
		ranges = append(ranges, a, a+":", "~:"+a, ":"+a, "@"+a, "@"+a+":", "@~:"+a)
		for _, b := range nums {
			ranges = append(ranges, a+":"+b, "@"+a+":"+b)
		}
	}
	ranges = append(ranges, "~:", "@~:", "", ":", "~", "@", "abc", "1:2:3", "--1")
	values := []float64{-100, -10, -0.5, 0, 0.5, 1, 2.5, 7, 9.99, 10, 10.01, 3600, 1e6}

	var in strings.Builder
	for _, r := range ranges {
		for _, v := range values {
			fmt.Fprintf(&in, "%s\t%v\n", r, v)
		}
	}
	perl := exec.Command("perl", "-MMonitoring::Plugin::Range", "-ne", `
		chomp; my ($r, $v) = split /\t/;
		local $SIG{__WARN__} = sub {};
		my $range = Monitoring::Plugin::Range->parse_range_string($r);
		print defined $range ? ($range->check_range($v) ? "1" : "0") : "invalid", "\n";`)
	perl.Stdin = strings.NewReader(in.String())
	out, err := perl.Output()
	if err != nil {
		t.Fatalf("perl: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	checked := 0
	for _, r := range ranges {
		parsed, perr := ParseRange(r)
		for _, v := range values {
			if !sc.Scan() {
				t.Fatal("perl gave fewer answers than questions")
			}
			want := sc.Text()
			got := "invalid"
			if perr == nil {
				got = "0"
				if parsed.Alert(v) {
					got = "1"
				}
			}
			if got != want {
				t.Errorf("range %q value %v: got %s, Monitoring::Plugin says %s", r, v, got, want)
			}
			checked++
		}
	}
	t.Logf("%d range/value pairs agree with Monitoring::Plugin::Range", checked)
}
