// Package roomstore is how the aggregator keeps a room's reducer state in
// the rtc_rooms KV bucket, and how tools (rtcctl) read it back.
//
// A room is stored under its token T (rawevent.RoomKey):
//
//	T              the header: the exactly-once protocol fields (the last
//	               input applied, the armed timer, the redo record of the last
//	               commit), the room's clock and seq, and, while the room is
//	               small, the whole state ("inline")
//	T.redo.<i>     the redo record in chunks, when it is too large for the header
//	T.r.<h>        a large ("split") room: one register per key
//	T.u.<h>        split: one m.room.member of a user
//	T.s.<h>        split: one slot
//	T.x.<h>        split: one live session's own fields
//	T.v.<hs>.<hu>  split: one user a live session has seen
//	T.e.<h>        split: when the last session of a session key ended
//	               (rtc.RoomState.LastEnded)
//
// A live session's members are not stored: they follow from the registers
// (rtc.RoomState.RebuildMembers) and are rebuilt when a room is loaded.
//
// <h> is a hash of the part's identity (the identity itself is in the
// value), so keys are short, printable and valid KV keys whatever the Matrix
// ids contain.
//
// Why two forms: a small room costs one write per commit when it is one
// value, but a value that holds every member grows without bound and costs
// O(members) to encode per commit. Past a threshold a room is split into
// parts and a commit writes only the parts its inputs changed, so an
// input's cost does not grow with its call and no value grows with the
// number of members.
//
// Commit protocol (see docs/aggregator.md, "Exactly once"): the header is the
// commit point. It is written with a revision check and carries the redo
// record: everything the commit changed besides the header (the split parts
// it wrote, the session events of its outbox). The parts, the session events,
// the live sessions and the timer are written after the header; a worker
// that loads a room whose last commit may not have been carried out (the
// partition's inputs up to it were not all acknowledged) applies the redo
// record first. Every such write is idempotent.
package roomstore

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Part kinds: the token after the room's key.
const (
	kindRegister   = "r"
	kindRoomMember = "u"
	kindSlot       = "s"
	kindSession    = "x"
	kindSeenUser   = "v"
	kindLastEnded  = "e"
	kindRedo       = "redo"
)

// hashTok is a short printable token of an identity: 16 bytes of SHA-256,
// base64url (22 characters).
func hashTok(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}

func registerKey(room, reg string) string { return room + "." + kindRegister + "." + hashTok(reg) }
func roomMemberKey(room string, u id.UserID) string {
	return room + "." + kindRoomMember + "." + hashTok(string(u))
}
func slotKey(room, slot string) string        { return room + "." + kindSlot + "." + hashTok(slot) }
func sessionPartKey(room, sess string) string { return room + "." + kindSession + "." + hashTok(sess) }
func seenUserKey(room, sess string, u id.UserID) string {
	return room + "." + kindSeenUser + "." + hashTok(sess) + "." + hashTok(string(u))
}
func redoChunkKey(room string, i int) string { return room + "." + kindRedo + "." + strconv.Itoa(i) }
func lastEndedKey(room, sess string) string  { return room + "." + kindLastEnded + "." + hashTok(sess) }

// PartsFilter is the KV key filter of every part of a room (not its header).
func PartsFilter(room string) string { return room + ".>" }

// partKind returns the kind token of a part key of room, or "".
func partKind(room, key string) string {
	rest, ok := strings.CutPrefix(key, room+".")
	if !ok {
		return ""
	}
	kind, _, _ := strings.Cut(rest, ".")
	return kind
}
