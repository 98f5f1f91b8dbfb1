package wire_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

func TestSortedMapRoundTrip(t *testing.T) {
	type item struct {
		Joins int `json:"joins"`
	}
	type holder struct {
		M wire.SortedMap[id.UserID, int] `json:"m,omitempty"`
		N wire.SortedMap[string, *item]  `json:"n"`
	}
	in := holder{M: wire.SortedMap[id.UserID, int]{"@b:x": 2, "@a:x": 1, "@c:x": 3}, N: wire.SortedMap[string, *item]{"k": {Joins: 4}}}
	first, err := wire.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if again, _ := wire.Marshal(in); string(again) != string(first) {
			t.Fatal("encoding is not deterministic")
		}
	}
	var out holder
	if err := wire.Unmarshal(first, &out); err != nil || len(out.M) != 3 || out.M["@b:x"] != 2 || out.N["k"].Joins != 4 {
		t.Fatalf("%+v %v", out, err)
	}
	b, _ := wire.Marshal(holder{})
	var empty holder
	if err := wire.Unmarshal(b, &empty); err != nil || empty.M != nil || empty.N != nil {
		t.Fatalf("nil maps: %+v %v", empty, err)
	}
}
