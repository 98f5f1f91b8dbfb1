// Package chaos holds the chaos test of the whole pipeline (issue 10): a
// randomized multi-room workload sent to a real `ingest serve` as appservice
// transactions while aggregator processes, the ingest and nats-server are
// killed and restarted; afterwards RTC_EVENTS must equal `rtcctl simulate`
// of the inputs RTC_RAW holds, event for event. Run it with `make chaos`;
// it is part of `go test ./...` and skipped only with -short.
package chaos
