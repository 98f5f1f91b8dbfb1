// Package events is the subscriber contract of rtc-sessions: the session
// events of RTC_EVENTS and the live sessions of the rtc_sessions bucket
// (their types and decoders), the subjects, filters and keys they are found
// under, the token encoding of Matrix identifiers, and a small subscriber
// API (Subscribe, WatchSessions, ListLiveSessions, SeqTracker).
//
// Subscribers import this package and nothing else of the project. Everything
// here is versioned: a decoder refuses a schema version it does not know with
// ErrUnsupportedVersion instead of misreading it. The services' own side
// (the raw inputs of RTC_RAW and their parser, the encoders, the ids and
// the internal streams) is in internal packages.
//
// # Versions and compatibility
//
// docs/events.md is the contract for readers in any language (subjects,
// tokens, every field, ordering, backfill, versioning); docs/asyncapi.yaml
// and docs/schemas/ describe the same messages for tools.
//
// Session events are version 3 (SchemaVersion) and live sessions in
// rtc_sessions version 4 (LiveSessionVersion). The version is in the body
// ("v") and in the header HeaderSchemaVersion.
//
// Version 3 of the session events, and 4 of the live sessions, write every
// field, an empty one with its zero value ("", 0, false or nil), and a
// member's nested JSON (focus_active, foci_preferred) as the msgpack map or
// array it stands for, in the JSON's key order; the older versions left
// empty fields out and held that JSON as msgpack bin of its text. Version 2
// (live sessions 3) added:
//
//   - Member.CallIntent (call_intent): the membership's m.call.intent, empty
//     when the event has none;
//   - SessionEvent.Changed (changed): on member_updated, the Member fields
//     whose values changed (ChangeEventID, ChangeExpiresAt, ...);
//   - member_updated is emitted for every new event of a membership that
//     neither joins nor leaves, so a live session always names the
//     membership's current event;
//   - session ids hash the session's key and the per-room seq of its
//     session_started: an id names one session forever;
//   - a session's started_at is never before the ended_at of the previous
//     session of the same (room, application, call_id).
//
// Compatibility policy. A minor change keeps the version: it may add a
// field, or a value to an open set of strings (reasons, formats, call
// intents); readers ignore fields they do not know. Anything else bumps
// the version: removing, renaming or retyping a field, changing its
// meaning or zero value, a new kind, another subject, token or key layout,
// other ordering or duplicate rules. The decoders read every older version
// that can still be stored (RTC_EVENTS for its retention after an upgrade,
// RTC_HISTORY for its own, the redo records of rooms in rtc_rooms, a bucket
// during an upgrade): DecodeSessionEvent versions 1 to 3, DecodeLiveSession
// 1 to 4, DecodeLiveMember 2 to 4. A version is dropped from the decoders
// only in a release that says so, at least RTC_HISTORY's retention after
// the last release that wrote it. A decoder refuses a newer version with
// ErrUnsupportedVersion: upgrade subscribers first, then the aggregators.
package events
