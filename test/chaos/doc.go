// Package chaos holds the chaos test of the whole pipeline.
//
// TestChaos builds the real binaries (internal/proctest), starts a
// standalone nats-server with file storage, three cmd/aggregator processes
// and `ingest serve` with three appservice registrations, and plays a
// seeded random workload over 60 seconds: 40 rooms of Element Call
// per-device memberships (joins, refreshes with created_ts, hang-ups {},
// rejoins with a new created_ts, expiries of 3-8 s that durable timers must
// fire, m.room.member leaves and rejoins, messages the ingest must drop,
// events delivered by two homeservers) and four big calls of 16 devices
// joining, refreshing and hanging up at once. Each transaction is retried
// with its id until the ingest answers 200, as a homeserver does.
// Meanwhile it SIGKILLs an aggregator every 1.5-4 s (right after a
// transaction is stored, sometimes two back to back, once all three at
// once) and restarts it under a new worker id, SIGKILLs the ingest three
// times while a transaction is in flight, and restarts nats-server once.
//
// Then it waits until every deadline has passed and every RTC_RAW consumer
// is idle, and checks:
//   - every generated event is in RTC_RAW exactly once, as sent (the
//     dropped types not at all), and no durable timer fired before its
//     deadline;
//   - RTC_EVENTS equals `rtcctl simulate --until now` of the event inputs
//     RTC_RAW holds, in stream order, event for event (decoded; ids, seq,
//     kinds, members, reasons, counts, summaries), per-room seq 1, 2, 3...,
//     every Nats-Msg-Id the event id and stored once;
//   - RTC_DLQ is empty; the rtc_sessions bucket (events.WatchSessions)
//     holds the simulation's live sessions;
//   - no process exited unless the test killed it.
//
// The workload keeps every input of a room out of the second before each of
// the room's deadlines, and every deadline out of the window around the
// nats-server restart, so the expected output does not depend on timing
// (see internal/pipelinetest/workload.go).
//
// Run it with `make chaos` (verbose) or as part of `make test`; it is
// skipped only with -short. The seed is printed first and last;
// RTC_CHAOS_SEED=N replays a workload (the kill moments still vary). On a
// difference it prints the first differing event of each room, the room's
// inputs as RTC_RAW holds them (timers included, times relative to T0),
// the chaos timeline and the last lines of every process's output.
package chaos
