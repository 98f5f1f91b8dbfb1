package rtc

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// TestParseStateKeyUser: every state key form seen in the wild. The user id ends at the first '_' after the
// first ':', so localparts with '_' work.
func TestParseStateKeyUser(t *testing.T) {
	for key, want := range map[string]id.UserID{
		"_@alice:example.org_ALICEDEV_m.call": "@alice:example.org",
		"_@alice:example.org_ALICEDEV":        "@alice:example.org",
		"@alice:example.org_ALICEDEV_m.call":  "@alice:example.org",
		"@alice:example.org":                  "@alice:example.org",
		"_@a_b_c:server_name.org_DEV":         "@a_b_c:server",
		"@a_b:hs.example:8448_DEV":            "@a_b:hs.example:8448",
		"ALICEDEV":                            "",
		"":                                    "",
		"_@":                                  "",
		"@nocolon_DEV":                        "",
		"@a:":                                 "",
	} {
		if got := ParseStateKeyUser(key); got != want {
			t.Errorf("ParseStateKeyUser(%q) = %q, want %q", key, got, want)
		}
	}
}

// TestBounds: Oversized content, ids and arrays are
// rejected with a reason, never stored as members.
func TestBounds(t *testing.T) {
	focus := `"focus_active":{"type":"livekit"}`
	manyFoci := strings.TrimSuffix(strings.Repeat(`{"type":"livekit"},`, MaxFoci+1), ",")
	var entries []string
	for i := 0; i <= MaxMemberships; i++ {
		entries = append(entries, fmt.Sprintf(`{"application":"m.call","call_id":"","device_id":"D%d","expires":1000}`, i))
	}
	tests := []struct{ name, content, want string }{
		{"content over 64 KiB", `{"application":"m.call","call_id":"","device_id":"D",` + focus + `,"pad":"` + strings.Repeat("x", MaxContentBytes) + `"}`, "exceeds"},
		{"device id over 255 bytes", `{"application":"m.call","call_id":"","device_id":"` + strings.Repeat("d", 256) + `",` + focus + `}`, "device_id longer"},
		{"too many foci", `{"application":"m.call","call_id":"","device_id":"D",` + focus + `,"foci_preferred":[` + manyFoci + `]}`, "foci_preferred has 17 entries"},
		{"too many legacy entries", `{"memberships":[` + strings.Join(entries, ",") + `]}`, "memberships has 65 entries"},
		{"timestamp beyond year 2500", `{"application":"m.call","call_id":"","device_id":"D",` + focus + `,"expires":99999999999999999}`, "expires too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "_@alice:example.org_D"
			ev := &rawevent.RawEvent{Type: rawevent.TypeCallMember.Type, StateKey: &key, Sender: "@alice:example.org",
				OriginServerTS: T0, EventID: "$e", Content: []byte(tt.content)}
			p, err := ParseStateMember(DefaultConfig(), ev)
			if err == nil || p.Kind != RegisterInvalid || len(p.Claims) != 0 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want invalid with %q, got %v %+v", tt.want, err, p)
			}
		})
	}
}

// TestCommonCaseAllocations: what a busy room sees most (joins and
// refreshes in Element Call's per-device form, the seed format) is parsed
// without maps or reflection: a refresh replacing a register with the same
// claim allocates little more than the parse result.
func TestCommonCaseAllocations(t *testing.T) {
	key := "_@alice:example.org_ALICEDEV_m.call"
	mk := func(typ, content string) *rawevent.RawEvent {
		return &rawevent.RawEvent{Type: typ, StateKey: &key, Sender: "@alice:example.org", OriginServerTS: T0,
			ReceivedAt: T0 + 10, EventID: "$e", Content: []byte(content)}
	}
	var common []*rawevent.RawEvent
	for _, name := range []string{"E1", "E2", "E5"} {
		for _, e := range example(t, name) {
			if e.Type == rawevent.TypeCallMember.Type {
				e.StateKey, e.Sender = &key, "@alice:example.org"
				common = append(common, &e)
			}
		}
	}
	common = append(common,
		mk(rawevent.TypeCallMember.Type, `{"application":"m.call","call_id":"ROOM","device_id":"D","focus_active":{"type":"livekit"}}`),
		mk(rawevent.TypeRTCMember.Type, `{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"},"foci_preferred":[{"type":"livekit"}]}`))
	for i, ev := range common {
		p, err := ParseStateMember(DefaultConfig(), ev)
		if err != nil || p.Kind != RegisterJoin {
			continue // a leave of the examples
		}
		prev := &Register{Kind: RegisterJoin, Claims: p.Claims}
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := parseStateMember(DefaultConfig(), ev, prev); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 3 {
			t.Errorf("input %d: a refresh costs %.0f allocations: %s", i, allocs, ev.Content)
		}
	}
}
