package simulate

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
)

// TraceStart is the origin_server_ts of a generated trace's first event.
const TraceStart int64 = 1767225600000

// WriteTrace writes a generated JSON-lines file of n Matrix events, the
// input of simulate's benchmark and of its comparison with matrix-js-sdk:
// rooms of Element Call devices (per-device org.matrix.msc3401.call.member
// state) joining, refreshing, leaving and crashing (a membership that is
// never refreshed and expires), after each user's m.room.member join. The
// same n and seed always give the same bytes: the golden outputs of the
// tests depend on it, so a change here means regenerating them.
func WriteTrace(w io.Writer, n int, seed uint64) error {
	const (
		rooms         = 200
		usersPerRoom  = 12
		expiresMS     = 3_600_000 // short enough that crashed members expire within the trace
		meanStepMS    = 200
		maxDelayMS    = 500
		roomMemberFmt = `{"type":"m.room.member","state_key":"%[1]s","sender":"%[1]s","event_id":"$t%[2]d","room_id":"%[3]s","origin_server_ts":%[4]d,"received_at":%[5]d,"content":{"membership":"join"}}` + "\n"
	)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	bw := bufio.NewWriterSize(w, 64*1024)
	type device struct {
		inCall  bool
		created int64
		intent  string
	}
	devices := make([]device, rooms*usersPerRoom)
	ts := TraceStart
	user := func(u int) string { return fmt.Sprintf("@user%03d:example.org", u) }
	room := func(r int) string { return fmt.Sprintf("!room%03d:example.org", r) }
	for i, written := 0, 0; written < n; i++ {
		ts += rng.Int64N(2 * meanStepMS)
		recv := ts + rng.Int64N(maxDelayMS)
		// The users join their rooms first.
		if i < rooms*usersPerRoom {
			r, u := i%rooms, i/rooms
			if _, err := fmt.Fprintf(bw, roomMemberFmt, user(u), i, room(r), ts, recv); err != nil {
				return fmt.Errorf("write trace: %w", err)
			}
			written++
			continue
		}
		k := rng.IntN(len(devices))
		r, u := k/usersPerRoom, k%usersPerRoom
		d := &devices[k]
		dev := fmt.Sprintf("DEV%03dR%03d", u, r)
		var content string
		switch {
		case !d.inCall:
			d.inCall, d.created, d.intent = true, 0, []string{"video", "audio"}[rng.IntN(2)]
			content = memberContent(dev, room(r), d.intent, 0, expiresMS)
			d.created = ts
		case rng.IntN(10) < 4: // a refresh: the same membership, its created_ts kept
			content = memberContent(dev, room(r), d.intent, d.created, expiresMS+ts-d.created)
		case rng.IntN(10) < 8: // a leave
			d.inCall = false
			content = `{}`
		default: // a crash: nothing is sent, the membership expires
			d.inCall = false
			continue
		}
		if _, err := fmt.Fprintf(bw, `{"type":"org.matrix.msc3401.call.member","state_key":"_%s_%s_m.call","sender":"%s","event_id":"$t%d","room_id":"%s","origin_server_ts":%d,"received_at":%d,"content":%s,"unsigned":{}}`+"\n",
			user(u), dev, user(u), i, room(r), ts, recv, content); err != nil {
			return fmt.Errorf("write trace: %w", err)
		}
		written++
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// memberContent is Element Call's per-device membership content (created
// 0: a first join, without created_ts).
func memberContent(dev, room, intent string, created, expires int64) string {
	ct := ""
	if created > 0 {
		ct = fmt.Sprintf(`"created_ts":%d,`, created)
	}
	return fmt.Sprintf(`{"application":"m.call","call_id":"","scope":"m.room","device_id":"%s",%s"expires":%d,"m.call.intent":"%s","focus_active":{"type":"livekit","focus_selection":"oldest_membership"},"foci_preferred":[{"type":"livekit","livekit_service_url":"https://rtc.example.org/livekit/jwt","livekit_alias":"%s"}]}`,
		dev, ct, expires, intent, room)
}
