package events

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, s := range []string{"", "!call:example.org", "m.call", "@u_x:hs.org", "ROOM", "a", "ü.*>  \t", "_"} {
		tok := Token(s)
		if strings.ContainsAny(tok, ".*> \t") || tok == "" {
			t.Fatalf("Token(%q) = %q is not a subject token", s, tok)
		}
		back, err := ParseToken(tok)
		if err != nil || back != s {
			t.Fatalf("ParseToken(Token(%q)) = %q, %v", s, back, err)
		}
	}
	if Token("") != "_" {
		t.Fatal(`the empty string must be "_"`)
	}
	for _, bad := range []string{"", "!!", "a"} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrBadToken) {
			t.Fatalf("ParseToken(%q): want ErrBadToken, got %v", bad, err)
		}
	}
}

func FuzzToken(f *testing.F) {
	f.Add("!call:example.org")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		back, err := ParseToken(Token(s))
		if err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
	})
}

func TestSubjectsAndKeys(t *testing.T) {
	room := id.RoomID("!abc:example.org")
	subj := SessionSubject("m.call", "", room, KindMemberJoined)
	if subj != "rtc.session.bS5jYWxs.IWFiYzpleGFtcGxlLm9yZw._.member_joined" {
		t.Fatalf("session subject %s", subj)
	}
	if live := LiveSubject("m.call", "", room, KindMemberJoined); live != "rtc.live.bS5jYWxs.IWFiYzpleGFtcGxlLm9yZw._.member_joined" {
		t.Fatalf("live subject %s", live)
	}
	app, r, call, err := ParseSessionKey(SessionKey("m.call", room, "x.y"))
	if err != nil || app != "m.call" || r != room || call != "x.y" {
		t.Fatalf("session key round trip: %s %s %s %v", app, r, call, err)
	}
	if f := SessionFilter(LivePrefix, "", room, ""); f != "rtc.live.*.IWFiYzpleGFtcGxlLm9yZw.*.*" {
		t.Fatalf("filter %s", f)
	}
}

func TestSessionEventMsg(t *testing.T) {
	for _, c := range []struct{ v, want int }{{0, SchemaVersion}, {1, 1}, {SchemaVersion, SchemaVersion}} {
		ev := SessionEvent{V: c.v, ID: "i1", Kind: KindSessionEnded, RoomID: "!r:x", Application: "m.call"}
		m := SessionEventMsg(&ev, []byte{1})
		if m.Subject != ev.Subject() || m.Header.Get("Nats-Msg-Id") != "i1" ||
			m.Header.Get(HeaderSchemaVersion) != strconv.Itoa(c.want) || string(m.Data) != "\x01" {
			t.Errorf("v %d: %s %v % x", c.v, m.Subject, m.Header, m.Data)
		}
	}
}
