package events

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// LiveSessionVersion is the version of the rtc_sessions layout:
//
//	<appTok>.<roomTok>.<callTok>           the session (LiveSession)
//	<appTok>.<roomTok>.<callTok>.<member>  one member (LiveMember) of a large session,
//	                                       <member>: see docs/events.md
//
// A small session (at most 16 devices at its peak) keeps its
// members in its own value, as version 1 did: one value per session. A
// larger one has MembersInKeys set and each member in a key of its own, so
// a session of 10,000 devices is 10,001 small values and a join writes two
// of them, instead of one value that grows with the call (version 1 stopped
// working at about 2,600 devices, the server's max_payload). A session
// stays in that form until it ends. The aggregator writes a session's
// member keys before the session's own key, so a watcher that assembles
// them (WatchSessions does) sees a session only after the members it counts.
//
// Version 3 has the same layout; its members carry CallIntent, and a
// member's value names the membership's current event (every new event of
// a membership is written). Version 4 writes every field (an empty one with
// its zero value) and a member's nested JSON as msgpack maps and arrays.
// Values of versions 1 to 3 are still read (a bucket holds several while
// the aggregators are upgraded).
const LiveSessionVersion = 4

// liveSessionVersionKnown reports whether a value of rtc_sessions with
// version v can be read: this version, or an older one.
func liveSessionVersionKnown(v int) bool { return v >= 1 && v <= LiveSessionVersion }

// LiveMember is the value of a member's key in the rtc_sessions bucket.
type LiveMember struct {
	V      int    `json:"v"`
	Member Member `json:"member"`
}

// SplitSessionsKey tells a session's own key from a member's key: it returns
// the session key and, for a member's key, the member token.
func SplitSessionsKey(key string) (session, member string, ok bool) {
	switch strings.Count(key, ".") {
	case 2:
		return key, "", true
	case 3:
		i := strings.LastIndexByte(key, '.')
		return key[:i], key[i+1:], true
	}
	return "", "", false
}

// DecodeLiveMember decodes the value of a member's key.
func DecodeLiveMember(data []byte) (Member, error) {
	var lm LiveMember
	if err := wire.Unmarshal(data, &lm); err != nil {
		return Member{}, fmt.Errorf("decode live member: %w", err)
	}
	if lm.V < 2 || lm.V > LiveSessionVersion { // member keys came with version 2
		return Member{}, fmt.Errorf("decode live member: %w %d", ErrUnsupportedVersion, lm.V)
	}
	return lm.Member, nil
}

// SortMembers orders members as a LiveSession lists them: oldest membership
// first, then user, device and membership id.
func SortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.JoinedAt != b.JoinedAt:
			return cmpInt(a.JoinedAt, b.JoinedAt)
		case a.UserID != b.UserID:
			return strings.Compare(string(a.UserID), string(b.UserID))
		case a.DeviceID != b.DeviceID:
			return strings.Compare(string(a.DeviceID), string(b.DeviceID))
		}
		return strings.Compare(a.MembershipID, b.MembershipID)
	})
}

func cmpInt(a, b int64) int {
	if a < b {
		return -1
	}
	return 1
}

// sessionAssembler puts sessions back together from the keys of the
// rtc_sessions bucket.
type sessionAssembler struct {
	members map[string]map[string]Member // session key -> member token -> member
}

// update applies one entry; it returns the session to deliver (nil with
// deliver for an ended session) when the entry is a session's own key.
func (a *sessionAssembler) update(e jetstream.KeyValueEntry) (s *LiveSession, deliver bool, err error) {
	sk, mt, ok := SplitSessionsKey(e.Key())
	if !ok {
		return nil, false, nil // not ours: ignore
	}
	put := e.Operation() == jetstream.KeyValuePut
	if mt != "" {
		if !put {
			delete(a.members[sk], mt)
			return nil, false, nil
		}
		m, err := DecodeLiveMember(e.Value())
		if err != nil {
			return nil, false, fmt.Errorf("member %s: %w", e.Key(), err)
		}
		if a.members[sk] == nil {
			a.members[sk] = map[string]Member{}
		}
		a.members[sk][mt] = m
		return nil, false, nil
	}
	if !put {
		delete(a.members, sk)
		return nil, true, nil
	}
	ls, err := DecodeLiveSession(e.Value())
	if err != nil {
		return nil, false, fmt.Errorf("session %s: %w", e.Key(), err)
	}
	if ls.MembersInKeys {
		ls.Members = make([]Member, 0, len(a.members[sk]))
		for _, m := range a.members[sk] {
			ls.Members = append(ls.Members, m)
		}
		SortMembers(ls.Members)
	}
	return &ls, true, nil
}

// WatchSessions delivers the live sessions of the rtc_sessions bucket, whole
// (members assembled from their keys), and then every change: the whole
// session again when it changed, and (key, nil) when it ended. initialDone
// is called once the current sessions were delivered.
func WatchSessions(ctx context.Context, js jetstream.JetStream, handle func(key string, s *LiveSession) error, initialDone func()) error {
	kv, err := js.KeyValue(ctx, BucketSessions)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", BucketSessions, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", BucketSessions, err)
	}
	// Stopping deletes the watch's consumer, a request that a read-only user
	// may not make and whose answer then never comes: do not wait for it
	// (the server removes an abandoned ordered consumer by itself).
	defer func() { go func() { _ = w.Stop() }() }()
	asm := sessionAssembler{members: map[string]map[string]Member{}}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return ctx.Err()
			}
			if e == nil {
				if initialDone != nil {
					initialDone()
				}
				continue
			}
			s, deliver, err := asm.update(e)
			if err != nil {
				return err
			}
			if deliver {
				if err := handle(e.Key(), s); err != nil {
					return err
				}
			}
		}
	}
}

// ListLiveSessions reads every live session, whole, sorted by key.
func ListLiveSessions(ctx context.Context, js jetstream.JetStream) ([]LiveSession, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	byKey := map[string]LiveSession{}
	listed := false
	err := WatchSessions(wctx, js, func(key string, s *LiveSession) error {
		if s == nil {
			delete(byKey, key)
		} else {
			byKey[key] = *s
		}
		return nil
	}, func() { listed = true; cancel() })
	if !listed {
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("list live sessions: %w", err)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]LiveSession, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out, nil
}
