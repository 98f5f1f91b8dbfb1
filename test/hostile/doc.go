// Package hostile holds the end-to-end reproductions of the holes a hostile homeserver or publisher could use:
// a hostile homeserver, a hostile pod and a careless operator against the
// real ingest and the real aggregator, run together in process over real
// HTTP and an embedded nats-server (loopback only). Each test sends what a
// homeserver would send (appservice transactions) or what a pod reaching
// NATS could, and looks where an operator would look: the HTTP answers,
// /metrics of both services, the aggregator's logs, RTC_RAW, RTC_EVENTS and
// `rtcctl room`.
//
//   - TestHostileHomeserver: forged clocks (received_at, origin_server_ts,
//     created_ts, expires), out-of-range numbers, reused transaction ids,
//     hostile and malformed writes, auth failures, a memory flood.
//   - TestMatrixErrorBodies: every non-200 answer is a Matrix error body.
//   - TestHostilePodOnNATS, TestEmbeddedNATSNotExposed: the shipped NATS
//     users refuse what each must not do, with the pipeline running.
//   - TestAggregatorWaitsForNATS: the aggregator outlives a NATS outage at
//     start instead of exiting.
//   - TestInputPublishersCannotRewrite: with the ingest's and the operator's
//     credentials, no roll-up or message schedule on RTC_RAW (its inputs and
//     armed timers stay), no input for another room than its subject's, no
//     timer input outside the timer path (each goes to RTC_DLQ with its
//     reason, and the room's clock stays).
//   - TestRtcctlPrintsHostileTextSafely, TestRtcctlRedriveReportsBadEntries,
//     TestRtcctlSimulateSkipsLongLines: the real rtcctl binary (built by
//     internal/proctest) shows a homeserver's hostile ids escaped on the
//     operator's terminal, re-drives every good DLQ entry and reports the
//     bad ones, and simulates past an over-long replay line.
//
// Every permission of every NATS user is tested in internal/authz, and the
// ingest's peak memory under a full-size flood in internal/ingest
// (TestAppserviceMemoryFlood).
package hostile
