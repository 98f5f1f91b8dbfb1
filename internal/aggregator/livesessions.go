package aggregator

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// sessionWrites are the rtc_sessions writes of an outbox. For each session
// it touches: a small one (at most eventcodec.InlineMembersMax devices at its
// peak) is one value with its members; a large one has a key per member
// (put for a join or update, delete for a leave) written before the
// session's own key. When a session becomes large in this commit (its peak
// before it, peakBefore, was small) or the previous peaks are not known
// (peakBefore nil: the redo of a room taken over), every member gets its
// key. An ended session's own key is purged, like a departed member's, with
// a marker that expires after markerTTL (0: a delete marker, kept).
func sessionWrites(st *rtc.RoomState, outbox []events.SessionEvent, peakBefore map[string]int, markerTTL time.Duration) ([]*nats.Msg, error) {
	type touched struct {
		app, call string
		members   map[string]*events.Member // member key -> member, nil: left
		order     []string
	}
	var sessions []*touched
	byKey := map[string]*touched{}
	for i := range outbox {
		ev := &outbox[i]
		sk := events.SessionKey(ev.Application, ev.RoomID, ev.CallID)
		t := byKey[sk]
		if t == nil {
			t = &touched{app: ev.Application, call: ev.CallID, members: map[string]*events.Member{}}
			byKey[sk] = t
			sessions = append(sessions, t)
		}
		if ev.Member == nil {
			continue
		}
		mk := eventcodec.SessionMemberKey(sk, ev.Member)
		if _, seen := t.members[mk]; !seen {
			t.order = append(t.order, mk)
		}
		if ev.Kind == events.KindMemberLeft {
			t.members[mk] = nil
		} else {
			t.members[mk] = ev.Member
		}
	}
	var msgs []*nats.Msg
	putMember := func(mk string, m *events.Member) error {
		b, err := eventcodec.EncodeLiveMember(m)
		if err != nil {
			return err
		}
		put := jsutil.KVPut(events.BucketSessions, mk, b)
		eventcodec.SetLiveSessionHeader(put)
		msgs = append(msgs, put)
		return nil
	}
	for _, t := range sessions {
		sk := events.SessionKey(t.app, st.RoomID, t.call)
		rk := rtc.SessionKey(t.app, t.call)
		s := st.Sessions[rk]
		// Keys of members that left a large session go, also when it ended
		// (its peak is gone with it: delete what the events name).
		// Without the previous peaks (a redo), the commit may have been the
		// one in which the session became large: write every member again.
		wasLarge := peakBefore != nil && peakBefore[rk] > eventcodec.InlineMembersMax
		mayHaveKeys := peakBefore == nil || wasLarge
		if s == nil || s.Peak > eventcodec.InlineMembersMax {
			for _, mk := range t.order {
				if m := t.members[mk]; m == nil {
					if mayHaveKeys {
						msgs = append(msgs, jsutil.KVPurgeTTL(events.BucketSessions, mk, markerTTL))
					}
				} else if s != nil && wasLarge {
					if err := putMember(mk, m); err != nil {
						return nil, err
					}
				}
			}
		}
		if s == nil {
			msgs = append(msgs, jsutil.KVPurgeTTL(events.BucketSessions, sk, markerTTL))
			continue
		}
		small := s.Peak <= eventcodec.InlineMembersMax
		ls := st.LiveSessionOf(s, small)
		switch {
		case small:
		case !wasLarge: // becomes large now: every member gets its key
			ls.MembersInKeys = true
			for _, m := range s.Members {
				if err := putMember(eventcodec.SessionMemberKey(sk, &m.Member), &m.Member); err != nil {
					return nil, err
				}
			}
		default:
			ls.MembersInKeys = true
		}
		b, err := eventcodec.EncodeLiveSession(&ls)
		if err != nil {
			return nil, err
		}
		m := jsutil.KVPut(events.BucketSessions, sk, b)
		eventcodec.SetLiveSessionHeader(m)
		msgs = append(msgs, m)
	}
	return msgs, nil
}
