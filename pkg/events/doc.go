// Package events is the public contract of rtc-sessions: the wire schemas of
// the raw input stream (RTC_RAW) and of the session event stream (RTC_EVENTS),
// their msgpack codec, the subject and KV-key builders, the token encoding of
// Matrix identifiers, and a small subscriber API.
//
// Subscribers import this package and nothing else of the project. Everything
// here is versioned: a decoder refuses a schema version it does not know with
// ErrUnsupportedVersion instead of misreading it.
//
// # Versions and compatibility
//
// RTC_RAW inputs are version 1 (RawVersion). Session events are version 2
// (SchemaVersion) and live sessions in rtc_sessions version 3
// (LiveSessionVersion). Version 2 of the session events, and 3 of the live
// sessions, changed:
//
//   - Member.CallIntent (call_intent): the membership's m.call.intent, empty
//     when the event has none;
//   - SessionEvent.Changed (changed): on member_updated, the Member fields
//     whose values changed (ChangeEventID, ChangeExpiresAt, ...);
//   - member_updated is emitted for every new event of a membership that
//     neither joins nor leaves (version 1 emitted it only when the expiry,
//     the foci or the format changed, and a new event with nothing else
//     changed was not told), so a live session always names the
//     membership's current event;
//   - session ids hash the session's key and the per-room seq of its
//     session_started (SessionID): an id names one session forever. Ids
//     already assigned stay: a session that started before the upgrade
//     keeps its id until it ends;
//   - a session's started_at is never before the ended_at of the previous
//     session of the same (room, application, call_id).
//
// The decoders read the older versions: DecodeSessionEvent version 1 (the
// new fields are empty), DecodeLiveSession versions 1 and 2,
// DecodeLiveMember version 2. A subscriber built against version 1 refuses
// the new events: upgrade subscribers first, then the aggregators. Fields a
// decoder does not know are ignored, so other languages' readers keep
// working if they do not check "v".
package events
