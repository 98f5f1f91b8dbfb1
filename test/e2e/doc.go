// Package e2e runs the service against a real Matrix homeserver (Dendrite
// v0.15.2, built through tools/dendrite and run by internal/dendritetest):
// the real ingest and aggregator binaries and a standalone nats-server
// (internal/proctest), driven by real Matrix clients (mautrix) acting out
// Element Call, asserting the exact session events on RTC_EVENTS.
//
// The tests need the Dendrite build (a few minutes the first time on a
// machine, cached afterwards), so they run only with RTC_E2E=1:
//
//	RTC_E2E=1 go test -count=1 -timeout 15m ./test/e2e/...
//
// On failure each test prints the tail of Dendrite's log and of every
// process's output.
//
//   - TestSyncSource*: the sync source: a bot account on
//     one Dendrite without an appservice; a join and a hang-up, a redaction
//     (which Dendrite never pushes to appservices), an ingest restart that
//     resumes from the persisted sync token, and a gappy sync (limited
//     timeline, whose state block must be forwarded).
//   - TestAppserviceCall: the same Dendrite pushing to the ingest registered
//     as its appservice (the first step towards TestFederated).
//   - TestFederated: two federating Dendrites, each with
//     the ingest registered as its appservice (one ingest process for both),
//     two aggregator processes, one stack shared by the scenarios, each in
//     rooms of its own: the session form (join, refresh with created_ts,
//     hang-up), users of both homeservers (each event pushed by both, stored
//     once, each device counted once), crashed clients (expired), leaving
//     the room in a call (left_room, counted again after rejoining), a
//     hostile write into another user's state key, malformed content, the
//     seed m.rtc.member state event and the legacy memberships array, a room
//     of version 12, several sessions in one room (call_id ROOM, one device
//     under two state keys, another application), and an ingest restart and
//     an aggregator SIGKILLed mid-call. Each asserts the
//     exact session events (kinds, members, formats, reasons, counts, seq
//     gapless from 1, ended summaries) and the live sessions (rtc_sessions);
//     rejections are read with `rtcctl room --json`.
//   - TestReconcile*: reconciliation against Dendrite: a
//     leave sent while the ingest was down and never pushed (repaired by the
//     pass at start) and a redaction Dendrite never pushes to appservices
//     (repaired by `rtcctl reconcile`), with the exact session events; and
//     a sync bot reading a room's state with its own token.
package e2e
