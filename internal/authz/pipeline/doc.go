// Package pipeline holds the end-to-end test of the shipped NATS
// permissions: the real aggregator and ingest services, each logged in as
// its own user, on an embedded server loaded from
// configs/nats/rtc-accounts.conf, and a subscriber reading the results. It
// is a package of its own so that the per-user refusal tests in
// internal/authz do not depend on the services compiling.
package pipeline
