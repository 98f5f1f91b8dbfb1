// Package cluster holds the test of the whole pipeline on a real 3-node
// NATS cluster, the way production runs it.
//
// TestCluster builds the real binaries (internal/proctest), starts three
// nats-server processes on loopback (the go.mod version, routes between
// them, file storage, JetStream), then three cmd/aggregator processes and
// `ingest serve` all at the same moment, every one with
// `topology.replicas: 3` in create mode: on a fresh cluster they create
// the same streams at once, which the server may leave unanswered for
// tens of seconds, and every one must become ready without a restart.
//
// It then plays a seeded random multi-room workload (internal/pipelinetest,
// the chaos test's generator, with big calls) through the appservice for
// 60 seconds, while it SIGKILLs the node leading RTC_RAW (restarted 2 s
// later), the node leading RTC_EVENTS during a big call (restarted 2 s
// later), an aggregator right after a transaction was stored (restarted
// under a new worker id), and again the node leading RTC_EVENTS during a
// big call, which then stays down for 20 seconds. In two windows the
// RTC_EVENTS leader is also asked to step down every 1.5-3 s, right after a
// transaction was stored (as in a rolling upgrade): elections while the
// aggregators publish, which a SIGKILL alone rarely hits.
//
// Afterwards it checks, with the chaos test's verifier:
//   - RTC_EVENTS equals `rtcctl simulate` of what RTC_RAW stored, event
//     for event;
//   - every room's events are stored in per-room seq order: in stream
//     order, seq increases by exactly one from one event of the room to its
//     next (a failure names the room, the stream sequences and the seqs);
//   - RTC_DLQ is empty, and rtc_sessions holds `simulate --sessions`;
//   - no process exited unless the test killed it.
//
// It logs the stall after each fault: how long after it the next input
// (RTC_RAW) and the next session event (RTC_EVENTS) were stored, and the
// longest pause until the next fault (at most 15 s).
//
// Run it with `make cluster` (verbose) or as part of `make test`; it is
// skipped with -short. It takes about two minutes. The seed is printed
// first and last; RTC_CLUSTER_SEED=N replays a workload (the moments of the
// faults and the leaders they hit still vary).
package cluster
