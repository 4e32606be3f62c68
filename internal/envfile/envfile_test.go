package envfile

import (
	"encoding/json"
	"maps"
	"os"
	"strings"
	"testing"
)

// tableCase is one case of testdata/systemd.json, the table of lines that
// packaging/system checks against systemd's own reading (TestSystemEnvironmentFile) and
// cmd/tierlock against tierlock's.
type tableCase struct {
	Name, Text string
	// Want is the environment systemd makes of Text; null where systemd versions differ.
	Want map[string]string
	// Refused is a part of tierlock's error for Text; "" when tierlock takes it.
	Refused string
}

func readTable(t *testing.T) []tableCase {
	t.Helper()
	b, err := os.ReadFile("testdata/systemd.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []tableCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestParseTable(t *testing.T) {
	for _, tc := range readTable(t) {
		t.Run(tc.Name, func(t *testing.T) {
			vars, err := Parse(tc.Text)
			if err != nil {
				if tc.Refused == "" {
					t.Fatalf("refused a line tierlock takes: %v", err)
				}
				return
			}
			if tc.Want != nil && !maps.Equal(Last(vars), tc.Want) {
				t.Errorf("got %q, systemd makes %q", Last(vars), tc.Want)
			}
		})
	}
}

func TestParseLines(t *testing.T) {
	vars, err := Parse("# c\nA=1\n\nB=\"x\ny\"\nC=2 \\\n 3\nD=4")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.Name+"@"+string(rune('0'+v.Line)))
	}
	if want := "A@2 B@4 C@6 D@8"; strings.Join(got, " ") != want {
		t.Errorf("names at lines %s, want %s", strings.Join(got, " "), want)
	}
}

// An error names the line, never its text: a token pasted in the wrong place stays unsaid.
func TestParseErrorsHideTheLine(t *testing.T) {
	for _, text := range []string{
		"s3cr3t-token\n", "s3cr3t token=x\n", "export s3cr3t=x\n", "A=s3cr3t\xff\n", "A=1\x00s3cr3t\n", "# \\\ns3cr3t=1\n",
	} {
		_, err := Parse(text)
		if err == nil {
			t.Errorf("%q: no error", text)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error quotes the line: %v", text, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"A=1\n", "A=\"x\\\ny\"", "#\\\nA=1", "A='", "A=\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		vars, err := Parse(text)
		if err != nil {
			return
		}
		for _, v := range vars {
			if !ValidName(v.Name) || v.Line < 1 || v.Line > 1+strings.Count(text, "\n") {
				t.Fatalf("%q: bad var %+v", text, v)
			}
		}
	})
}
