package events

import (
	"bytes"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// A member's nested value that no JSON event could have made (deeper than
// maxNesting, a map with a key that is not a string) is an error, not a
// crash or a misread.
func TestNestedJSONHostile(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, maxNesting+2) // arrays of one element
	deep = append(deep, 0x01)
	intKey := []byte{0x81, 0x01, 0x02} // {1: 2}
	for name, nested := range map[string][]byte{"deep": deep, "int key": intKey} {
		b := wire.AppendMapLen(nil, 2)
		b = wire.AppendString(b, "user_id")
		b = wire.AppendString(b, "@a:x")
		b = wire.AppendString(b, "focus_active")
		b = append(b, nested...)
		var m Member
		if err := wire.Unmarshal(b, &m); err == nil {
			t.Errorf("%s: decoded as %s", name, m.FocusActive)
		}
	}
	ok := []byte{0x92, 0x01, 0xc3} // [1, true]
	b := wire.AppendMapLen(nil, 1)
	b = wire.AppendString(b, "foci_preferred")
	b = append(b, ok...)
	var m Member
	if err := wire.Unmarshal(b, &m); err != nil || string(m.FociPreferred) != "[1,true]" {
		t.Errorf("[1, true]: %s, %v", m.FociPreferred, err)
	}
}
