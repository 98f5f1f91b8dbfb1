package eventcodec

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"

	"maunium.net/go/mautrix/id"
)

// EventID is the deterministic id of the session event with per-room sequence
// number seq. Replays and every replica compute the same id, so it serves as
// the Nats-Msg-Id that de-duplicates re-published outboxes.
func EventID(room id.RoomID, seq uint64) string {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	return digest("rtc-sessions/event", string(room), string(n[:]))
}

// SessionID is the deterministic id of a session: the hash of its key
// (room, application, call id) and startSeq, the per-room seq of its
// session_started event. A room's seq never repeats, so an id names one
// session forever, also when a session of the same call starts again with
// the same members and the same start (a membership restored when its user
// rejoins the room); replays and every replica assign the same seq, hence
// the same id. (Version 1 hashed the start and the first member instead,
// which such a restored session repeated.)
func SessionID(room id.RoomID, app, callID string, startSeq uint64) string {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], startSeq)
	return digest("rtc-sessions/session/2", string(room), app, callID, string(n[:]))
}

// digest hashes length-prefixed parts, so that no two part lists collide.
func digest(parts ...string) string {
	h := sha256.New()
	var l [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		h.Write(l[:])
		h.Write([]byte(p))
	}
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}
