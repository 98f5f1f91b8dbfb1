// Package rawevent is the services' internal input contract: the inputs on
// RTC_RAW (RawEvent, RawVersion, their codec), the parser that turns a Matrix
// client-server event into one (ParseEvent, with the limits and errors of
// its envelope check), the Matrix event types the ingest forwards, and the
// names of the streams, buckets and subjects only the services and rtcctl
// use (RTC_RAW and its partitions, RTC_TIMERS, RTC_DLQ, rtc_rooms,
// rtc_workers).
//
// Subscribers never see any of it (docs/events.md, "Raw inputs"): their
// contract is pkg/events, which this package builds on (tokens, versions).
package rawevent
