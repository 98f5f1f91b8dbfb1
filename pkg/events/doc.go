// Package events is the public contract of rtc-sessions: the wire schemas of
// the raw input stream (RTC_RAW) and of the session event stream (RTC_EVENTS),
// their msgpack codec, the subject and KV-key builders, the token encoding of
// Matrix identifiers, and a small subscriber API.
//
// Subscribers import this package and nothing else of the project. Everything
// here is versioned: a decoder refuses a schema version it does not know with
// ErrUnsupportedVersion instead of misreading it.
package events
