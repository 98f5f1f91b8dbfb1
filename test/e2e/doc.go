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
//   - TestSyncSource*: the sync source (issue 9, item 3): a bot account on
//     one Dendrite without an appservice; a join and a hang-up, a redaction
//     (which Dendrite never pushes to appservices), an ingest restart that
//     resumes from the persisted sync token, and a gappy sync (limited
//     timeline, whose state block must be forwarded).
//   - TestAppserviceCall: the same Dendrite pushing to the ingest registered
//     as its appservice (the start of issue 9, item 2).
package e2e
