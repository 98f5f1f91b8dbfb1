package rtc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

var update = flag.Bool("update", false, "rewrite testdata/sessionform.golden")

// sessionFormCase is one input of TestSessionFormGolden.
type sessionFormCase struct {
	content          []byte
	typ, key, sender string
	ts, recv         int64
}

// sessionFormCases are the contents of the examples, of the fuzz seed
// corpora and of systematic variations of the examples' session-form
// contents (each known field absent, null, of every JSON type, too long,
// escaped, duplicated; white space; numbers of every shape; bad foci), each
// as both state event types.
func sessionFormCases(t *testing.T) []sessionFormCase {
	t.Helper()
	const user, key = "@alice:example.org", "_@alice:example.org_ALICEDEV_m.call"
	var contents [][]byte
	files, _ := filepath.Glob("testdata/examples/*.jsonl")
	var bases []map[string]json.RawMessage
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range splitLines(b) {
			var e struct {
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(line, &e) != nil {
				continue
			}
			contents = append(contents, e.Content)
			var m map[string]json.RawMessage
			if e.Type == rawevent.TypeCallMember.Type && json.Unmarshal(e.Content, &m) == nil && m["application"] != nil && len(bases) < 4 {
				bases = append(bases, m)
			}
		}
	}
	var out []sessionFormCase
	add := func(content []byte, key, sender string, ts, recv int64) {
		for _, typ := range []string{rawevent.TypeCallMember.Type, rawevent.TypeRTCMember.Type} {
			out = append(out, sessionFormCase{content: content, typ: typ, key: key, sender: sender, ts: ts, recv: recv})
		}
	}
	for _, c := range contents {
		add(c, key, user, T0, T0+10)
	}
	// The fuzz seed corpora, with their keys, senders and times.
	for _, dir := range []string{"FuzzFastStateMember", "FuzzParseStateMember"} {
		files, _ := filepath.Glob(filepath.Join("testdata/fuzz", dir, "*"))
		for _, name := range files {
			args := readCorpusFile(t, name)
			c := sessionFormCase{content: []byte(args[0]), key: args[1], sender: args[2]}
			c.ts, _ = strconv.ParseInt(args[3], 10, 64)
			if len(args) > 4 {
				c.recv, _ = strconv.ParseInt(args[4], 10, 64)
			}
			add(c.content, c.key, c.sender, c.ts, c.recv)
		}
	}
	fieldValues := []string{`null`, `7`, `-1`, `0`, `1e3`, `1.5`, `1.0`, `1E+2`, `99999999999999999`, `1e400`, `-1e400`,
		`9007199254740991`, `9007199254740992`, `16725225600000`, `16725225600001`, `"123"`, `""`, `"x"`,
		`"\u0041B"`, `"\u00e9"`, "\"\xff\xfe\"", `"é"`, `"` + strings.Repeat("d", 255) + `"`, `"` + strings.Repeat("d", 256) + `"`,
		`true`, `[]`, `{}`, `[1,2]`, `{"type":"x"}`, `{"type":null}`, `{"type":5}`, `{"type":"a","type":"b"}`,
		`{"t\u0079pe":"x"}`, `{"type" : "x" , "y" : [ 1 , { } ] }`, `{"type":"` + strings.Repeat("t", 256) + `"}`,
		`[{"type":"x"}]`, `[{"type":"x"},5]`, `[{}]`, `[{"type":"x"},{"type":"y","z":{"a":[null]}}]`,
		`[` + strings.TrimSuffix(strings.Repeat(`{"type":"x"},`, MaxFoci), ",") + `]`,
		`[` + strings.TrimSuffix(strings.Repeat(`{"type":"x"},`, MaxFoci+1), ",") + `]`,
		`[` + strings.Repeat(`[`, 70) + strings.Repeat(`]`, 70) + `]`}
	fieldsOf := []string{"application", "call_id", "device_id", "scope", "focus_active", "foci_preferred",
		"created_ts", "expires", callIntentField, "memberships", "other"}
	for bi, m := range bases {
		base := marshalOrdered(m)
		add(base, key, user, T0, T0+10)
		add(base, "_@bob:example.org_BOBDEV_m.call", user, T0, 0)
		add(base, "ALICEDEV", user, T0+hour, T0)
		var indented bytes.Buffer
		_ = json.Indent(&indented, base, " ", "\t")
		add(indented.Bytes(), key, user, T0, T0+10)
		add(append([]byte(" "), append(base, "\n"...)...), key, user, T0, T0+10)
		add(append(bytes.Clone(base), "x"...), key, user, T0, T0+10)
		if bi > 1 {
			continue // the field variations of two bases are enough
		}
		for _, f := range fieldsOf {
			without := maps(m, f, "")
			add(marshalOrdered(without), key, user, T0, T0+10)
			for _, v := range fieldValues {
				add(marshalOrdered(maps(m, f, v)), key, user, T0, T0+10)
			}
			// A duplicate of the field at the end (encoding/json keeps the
			// last), and the field's name escaped.
			dup := marshalOrdered(m)
			dup = append(dup[:len(dup)-1], fmt.Sprintf(`,%q:"dup"}`, f)...)
			add(dup, key, user, T0, T0+10)
			if f != "other" && m[f] != nil {
				esc := bytes.Replace(marshalOrdered(m), []byte(`"`+f+`"`), []byte(`"`+escapeFirst(f)+`"`), 1)
				add(esc, key, user, T0, T0+10)
			}
		}
	}
	return out
}

// escapeFirst writes the first letter of s as a \u escape.
func escapeFirst(s string) string { return fmt.Sprintf(`\u%04x`, s[0]) + s[1:] }

// maps returns a copy of m with field f set to the JSON value v (removed
// when v is "").
func maps(m map[string]json.RawMessage, f, v string) map[string]json.RawMessage {
	c := make(map[string]json.RawMessage, len(m)+1)
	for k, x := range m {
		c[k] = x
	}
	if v == "" {
		delete(c, f)
	} else {
		c[f] = json.RawMessage(v)
	}
	return c
}

// marshalOrdered writes m as a JSON object with sorted keys, values verbatim
// (encoding/json would reject the invalid UTF-8 some values hold).
func marshalOrdered(m map[string]json.RawMessage) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:", k)
		b.Write(m[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// readCorpusFile reads the arguments of a "go test fuzz v1" file as strings
// (numbers in decimal).
func readCorpusFile(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "go test fuzz") {
			continue
		}
		open := strings.IndexByte(line, '(')
		if open < 0 || !strings.HasSuffix(line, ")") {
			t.Fatalf("%s: %q", name, line)
		}
		v := line[open+1 : len(line)-1]
		if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "`") {
			s, err := strconv.Unquote(v)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			v = s
		}
		args = append(args, v)
	}
	return args
}

// describe is what ParseStateMember says of one case, as one line.
func describe(p Parsed, err error) string {
	r := struct {
		Kind     RegisterKind
		Claims   []Claim
		Rejected []string        `json:",omitempty"`
		Codes    []RejectionCode `json:",omitempty"`
		Err      string          `json:",omitempty"`
		Code     RejectionCode   `json:",omitempty"`
	}{Kind: p.Kind, Claims: p.Claims, Rejected: p.Rejected, Codes: p.RejectedCodes}
	if err != nil {
		r.Err, r.Code = err.Error(), CodeOf(err)
	}
	b, mErr := json.Marshal(r)
	if mErr != nil {
		return "unencodable: " + mErr.Error()
	}
	return string(b)
}

// TestSessionFormGolden: ParseStateMember says of every case of
// sessionFormCases exactly what testdata/sessionform.golden records (the
// claims or the error, with its code), also when it replaces a register
// holding the same claim (whose strings it then reuses). go test -update
// rewrites the file.
func TestSessionFormGolden(t *testing.T) {
	cases := sessionFormCases(t)
	var got bytes.Buffer
	for i, c := range cases {
		key := c.key
		ev := &rawevent.RawEvent{Type: c.typ, StateKey: &key, Sender: id.UserID(c.sender), OriginServerTS: c.ts,
			ReceivedAt: c.recv, Content: c.content, EventID: "$golden"}
		p, err := ParseStateMember(DefaultConfig(), ev)
		line := describe(p, err)
		if len(p.Claims) == 1 {
			again, err2 := parseStateMember(DefaultConfig(), ev, &Register{Kind: RegisterJoin, Claims: p.Claims})
			if d := describe(again, err2); d != line {
				t.Fatalf("case %d: with a previous register:\n%s\nwithout:\n%s", i, d, line)
			}
		}
		fmt.Fprintf(&got, "%d %s\n", i, line)
	}
	const golden = "testdata/sessionform.golden"
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(gl) && i < len(wl); i++ {
		if gl[i] != wl[i] {
			c := cases[i]
			t.Fatalf("line %d differs from %s:\n got %s\nwant %s\ninput: %s %q key %q sender %q ts %d received %d",
				i+1, golden, gl[i], wl[i], c.typ, c.content, c.key, c.sender, c.ts, c.recv)
		}
	}
	if len(gl) != len(wl) {
		t.Fatalf("%d lines, %s has %d", len(gl), golden, len(wl))
	}
	t.Logf("%d cases", len(cases))
}
