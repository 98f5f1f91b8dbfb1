// Package rtc is the MatrixRTC domain, pure: it parses every call-membership
// format seen in the wild and reduces a room's membership events to sessions.
// It has no clock, no I/O and no NATS: Apply takes the room state and one
// input and returns the session events the input causes, deterministically,
// so that replaying the same inputs reproduces the same outputs byte for byte.
//
// The semantics are those the README's table and docs/aggregator.md state. In short: each state key (or
// sticky key) is a last-writer-wins register holding the latest event by
// (effective time, event_id), where the effective time is origin_server_ts
// unless the sender's clock is ahead of the receive time by more than the
// skew allowance (EffectiveTime); registers yield membership claims; claims for
// the same (session, user, device) are de-duplicated (latest created_ts()
// represents the member); a claim counts while it is unexpired, its user is in
// the room and its slot (if the room has one) is open; sessions start when
// their first member joins and end when the last one leaves. No membership
// lives longer than the expiry cap past the time the service received it,
// and every rejection carries a RejectionCode.
package rtc
