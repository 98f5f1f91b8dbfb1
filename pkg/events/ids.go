package events

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

// SessionID is the deterministic id of a session: the hash of its key, its
// start and its first member. It is stable across replays and replicas, and
// two sessions of the same call at different times get different ids.
func SessionID(room id.RoomID, app, callID string, startedAt int64, firstUser id.UserID, firstDevice id.DeviceID) string {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(startedAt))
	return digest("rtc-sessions/session", string(room), app, callID, string(n[:]), string(firstUser), string(firstDevice))
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
