//go:build !race

package ingest

// raceEnabled: the race detector's shadow memory inflates RSS (not the Go
// heap), so RSS bounds are checked only without it.
const raceEnabled = false
