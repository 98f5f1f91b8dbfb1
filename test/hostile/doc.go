// Package hostile holds the end-to-end reproductions of issue 7's holes:
// a hostile homeserver and a careless operator against the real ingest and
// the real aggregator, run together in process over real HTTP and an
// embedded nats-server (loopback only). Each test sends what a homeserver
// would send (appservice transactions) and looks where an operator would
// look: the HTTP answers, /metrics of both services, RTC_RAW, RTC_EVENTS
// and `rtcctl room`.
//
// The NATS users and their refusals are tested in internal/authz (the
// shipped permissions) and internal/authz/pipeline (the whole pipeline
// under them); the memory flood in internal/ingest (TestAppserviceMemoryFlood).
package hostile
