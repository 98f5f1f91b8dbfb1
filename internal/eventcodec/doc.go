// Package eventcodec is the writing side of pkg/events' messages, which only
// the services need: the encoders of session events, live sessions and live
// members (stamping the current version), the deterministic event and
// session ids, the keys of a large session's members in rtc_sessions, and a
// fast read of a live session's participant count.
//
// Subscribers decode with pkg/events; these stay internal so that the public
// package exports only what a subscriber needs.
package eventcodec
