package aggregator

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// TestSessionWrites: a small session is one value holding its members; the
// commit in which it grows past eventcodec.InlineMembersMax writes every member
// under its own key and the session's value without them; afterwards only
// the members an event names are written; a redo (previous peaks unknown)
// writes every member of a large session; the end deletes the session's
// key and the keys of the members that leave with it.
func TestSessionWrites(t *testing.T) {
	room := id.RoomID("!writes:" + testHS)
	st := rtc.NewRoomState(room)
	now := time.Now().UnixMilli()
	apply := func(evs ...rawevent.RawEvent) (map[string]int, []events.SessionEvent) {
		peaks := map[string]int{}
		for k, s := range st.Sessions {
			peaks[k] = s.Peak
		}
		var out []events.SessionEvent
		for i := range evs {
			out = append(out, rtc.Apply(rtc.DefaultConfig(), st, &evs[i]).Events...)
		}
		return peaks, out
	}
	join := func(i int) rawevent.RawEvent {
		return joinEv(room, id.UserID(fmt.Sprintf("@u%d:%s", i, testHS)), fmt.Sprintf("D%d", i), now+int64(i), 0, fmt.Sprintf("$j%d", i))
	}
	type counts struct{ memberPuts, memberDels, sessionPuts, sessionDels int }
	count := func(peaks map[string]int, out []events.SessionEvent) (counts, *events.LiveSession) {
		msgs, err := sessionWrites(st, out, peaks, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var c counts
		var last *events.LiveSession
		for _, m := range msgs {
			_, member, _ := events.SplitSessionsKey(m.Subject[len("$KV."+events.BucketSessions+"."):])
			switch {
			case member != "" && jsutil.IsKVDelete(m):
				c.memberDels++
			case member != "":
				c.memberPuts++
			case jsutil.IsKVDelete(m):
				c.sessionDels++
			default:
				c.sessionPuts++
				ls, err := events.DecodeLiveSession(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				last = &ls
			}
		}
		return c, last
	}
	var first []rawevent.RawEvent
	for i := range eventcodec.InlineMembersMax {
		first = append(first, join(i))
	}
	c, ls := count(apply(first...))
	if c != (counts{sessionPuts: 1}) || ls.MembersInKeys || len(ls.Members) != eventcodec.InlineMembersMax {
		t.Fatalf("small session: %+v, in keys %v, %d members inline", c, ls.MembersInKeys, len(ls.Members))
	}
	n := eventcodec.InlineMembersMax + 1
	c, ls = count(apply(join(eventcodec.InlineMembersMax)))
	if c != (counts{memberPuts: n, sessionPuts: 1}) || !ls.MembersInKeys || len(ls.Members) != 0 {
		t.Fatalf("becoming large: %+v, in keys %v, %d members inline", c, ls.MembersInKeys, len(ls.Members))
	}
	c, _ = count(apply(join(n), leaveEv(room, "@u0:"+testHS, "D0", now+100, "$l0")))
	if c != (counts{memberPuts: 1, memberDels: 1, sessionPuts: 1}) {
		t.Fatalf("large session, one join and one leave: %+v", c)
	}
	peaks, out := apply(join(n + 1))
	if c, _ = count(nil, out); c.memberPuts != len(st.Sessions[rtc.SessionKey("m.call", "")].Members) {
		t.Fatalf("redo of a large session: %+v, want every member put", c)
	}
	_ = peaks
	var leaves []rawevent.RawEvent
	for i := 1; i <= n+1; i++ {
		leaves = append(leaves, leaveEv(room, id.UserID(fmt.Sprintf("@u%d:%s", i, testHS)), fmt.Sprintf("D%d", i), now+200+int64(i), fmt.Sprintf("$l%d", i)))
	}
	c, _ = count(apply(leaves...))
	if c != (counts{memberDels: n + 1, sessionDels: 1}) {
		t.Fatalf("end of a large session: %+v", c)
	}
}
