// Package safetext makes text that came from a homeserver (room, user and
// device ids, applications, call ids, event ids, reasons, error texts,
// header values) safe to print on an operator's terminal: rtcctl's tables
// and lines, and simulate's reports.
//
// A hostile identifier must not be able to move the cursor, clear the
// screen, set the clipboard (OSC 52), print a line of its own (an embedded
// newline), shift table columns (a tab), reorder what is shown (bidi
// controls) or hide characters (zero-width and other invisible ones).
// Escape replaces every such character with a visible Go-style escape
// (\n, \x1b, \u202e, \xff for a byte that is not UTF-8), and a backslash
// with \\, so that what is shown is unambiguous: the operator sees that
// something odd is there, and what.
//
// Printf-style output goes through Fprintf or Sprintf, which escape every
// string-typed argument and every error; the format itself is the
// program's own. JSON output stays exact: NewJSONEncoder's output decodes to
// the same values, with the few characters encoding/json leaves raw that a
// terminal may act on (DEL and the C1 controls) written as \u escapes.
package safetext

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text is a string that is already safe to print (the result of Sprintf,
// Escape or Quote): Fprintf and Sprintf pass it on as it is, so that safe
// pieces can be composed without escaping them twice.
type Text string

// Unsafe reports whether r must be escaped: control characters (C0, DEL,
// C1), line and paragraph separators, format characters (bidi controls,
// zero-width characters, the BOM, soft hyphen, tags), spaces other than
// U+0020, private-use and unassigned code points, and the characters
// Unicode marks as default-ignorable (invisible: Hangul fillers, the
// combining grapheme joiner, ...). A backslash is escaped too, by Escape.
func Unsafe(r rune) bool {
	if r < utf8.RuneSelf {
		return r < ' ' || r == 0x7f
	}
	return !unicode.IsPrint(r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r)
}

// FirstUnsafe is the byte offset of the first character in s that a
// terminal could act on (Unsafe, or a byte that is not UTF-8), or -1 if
// there is none. Line ends ("\n") are allowed: s is meant to be a whole
// output. Tests check rtcctl's output with it.
func FirstUnsafe(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || (r != '\n' && Unsafe(r)) {
			return i
		}
		i += size
	}
	return -1
}

// Escape returns s with every character Unsafe reports, every backslash and
// every byte that is not UTF-8 replaced with a Go-style escape. It returns s
// itself when there is nothing to escape.
func Escape(s string) Text { return Text(escape(s, false)) }

// Quote is Escape with double quotes around, and double quotes inside
// escaped (\"), for values whose edges matter (a state key, a raw body).
func Quote(s string) Text { return Text(`"` + escape(s, true) + `"`) }

func escape(s string, quote bool) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\\' || (quote && r == '"') || Unsafe(r) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case quote && r == '"':
			b.WriteString(`\"`)
		case !Unsafe(r):
			b.WriteString(s[i : i+size])
		default:
			writeEscape(&b, r)
		}
		i += size
	}
	return b.String()
}

func writeEscape(b *strings.Builder, r rune) {
	switch r {
	case '\a':
		b.WriteString(`\a`)
	case '\b':
		b.WriteString(`\b`)
	case '\f':
		b.WriteString(`\f`)
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\t':
		b.WriteString(`\t`)
	case '\v':
		b.WriteString(`\v`)
	default:
		switch {
		case r < utf8.RuneSelf:
			fmt.Fprintf(b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			fmt.Fprintf(b, `\U%08x`, r)
		}
	}
}

// Args returns args with every string-typed value (string, id.RoomID, ...)
// and every error escaped, byte slices (json.RawMessage, ...) escaped as
// strings, and Text values
// passed on as they are. Other values (numbers, times, ...) are unchanged:
// their own formatting is safe.
func Args(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case Text:
			out[i] = string(v)
		case string:
			out[i] = escape(v, false)
		case error:
			out[i] = escape(v.Error(), false)
		case []byte:
			out[i] = escape(string(v), false)
		default:
			switch rv := reflect.ValueOf(a); {
			case rv.Kind() == reflect.String:
				out[i] = escape(rv.String(), false)
			case rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8: // json.RawMessage, ...
				out[i] = escape(string(rv.Bytes()), false)
			default:
				out[i] = a
			}
		}
	}
	return out
}

// Fprintf is fmt.Fprintf with the arguments escaped (Args). Use %s (not %q
// or %v) for strings: %q would escape the escapes again; Quote quotes.
func Fprintf(w io.Writer, format string, args ...any) (int, error) {
	return fmt.Fprintf(w, format, Args(args)...)
}

// Sprintf is fmt.Sprintf with the arguments escaped (Args).
func Sprintf(format string, args ...any) Text {
	return Text(fmt.Sprintf(format, Args(args)...))
}

// Join joins escaped parts with sep (the program's own).
func Join[S ~string](parts []S, sep string) Text {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = escape(string(p), false)
	}
	return Text(strings.Join(out, sep))
}

// LineWriter escapes what is written to it (a log line, say) like Escape,
// keeping each write's final newline: a writer for loggers whose messages
// may quote what a server sent. Each Write must be whole lines (zap writes
// an entry at a time).
type LineWriter struct{ W io.Writer }

func (l LineWriter) Write(p []byte) (int, error) {
	s := string(p)
	nl := strings.HasSuffix(s, "\n")
	out := escape(strings.TrimSuffix(s, "\n"), false)
	if nl {
		out += "\n"
	}
	if _, err := io.WriteString(l.W, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// NewJSONEncoder is json.NewEncoder(w) whose output is also safe on a
// terminal (see JSON).
func NewJSONEncoder(w io.Writer) *json.Encoder { return json.NewEncoder(jsonWriter{w}) }

type jsonWriter struct{ w io.Writer }

// Write relies on json.Encoder writing each value whole, in one call: no
// two-byte character is split between calls.
func (j jsonWriter) Write(p []byte) (int, error) {
	if _, err := j.w.Write(JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// JSON rewrites the output of encoding/json so that a terminal cannot act on
// it, without changing what it decodes to: encoding/json escapes the C0
// controls, U+2028 and U+2029 but writes DEL (U+007F) and the C1 controls
// (U+0080 to U+009F, among them CSI and OSC) raw; JSON writes them as
// \u007f and \u0080 to \u009f. This is exact because such characters can
// only be inside JSON strings, where the escape means the same character.
// Bidi and zero-width characters are left as they are: JSON output is for
// programs, and escaping them there would not change the decoded values.
func JSON(b []byte) []byte {
	i := 0
	for i < len(b) && b[i] != 0x7f && !(b[i] == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] <= 0x9f) {
		i++
	}
	if i == len(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for ; i < len(b); i++ {
		switch {
		case b[i] == 0x7f:
			out = append(out, `\u007f`...)
		case b[i] == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] <= 0x9f:
			out = fmt.Appendf(out, `\u%04x`, b[i+1])
			i++
		default:
			out = append(out, b[i])
		}
	}
	return out
}
