package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// ReplayStats counts what a replay did.
type ReplayStats struct {
	Lines      int
	Stored     int
	Duplicates int
	Filtered   int
	Malformed  int
}

// ErrMalformedLines is returned by Replay when some lines were skipped.
var ErrMalformedLines = errors.New("malformed lines skipped")

const replayBatch = 256

// Replay publishes a JSON-lines file of Matrix client events (one per line,
// optional top-level received_at; the format of `rtcctl simulate`) as
// homeserver hs with source rawevent.SourceReplay. Blank lines are skipped.
// Malformed lines are reported on report as "name:LINE: reason" and skipped;
// the error then wraps ErrMalformedLines. receivedAt stamps lines without
// received_at (0: their origin_server_ts, which makes a replay reproducible).
func Replay(ctx context.Context, r io.Reader, name string, pub *Publisher, hs string, receivedAt func() int64,
	report io.Writer, m *Metrics, log *zap.Logger) (ReplayStats, error) {
	var st ReplayStats
	br := bufio.NewReaderSize(r, 64<<10)
	batch := make([]rawevent.RawEvent, 0, replayBatch)
	flush := func() error {
		s, err := pub.Publish(ctx, hs, rawevent.SourceReplay, batch)
		st.Stored += s.Stored
		st.Duplicates += s.Duplicates
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("replay %s up to line %d: %w", name, st.Lines, err)
		}
		return nil
	}
	for {
		line, tooLong, err := readLine(br, rawevent.MaxEventBytes+4096)
		if err == io.EOF && len(line) == 0 && !tooLong {
			break
		}
		if err != nil && err != io.EOF {
			return st, fmt.Errorf("read %s line %d: %w", name, st.Lines+1, err)
		}
		st.Lines++
		if tooLong {
			st.Malformed++
			m.rejected(hs, rawevent.SourceReplay, RejectTooLarge)
			fmt.Fprintf(report, "%s:%d: line longer than %d bytes\n", name, st.Lines, rawevent.MaxEventBytes+4096)
			continue
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		m.received(hs, rawevent.SourceReplay, 1)
		var at int64
		if receivedAt != nil {
			at = receivedAt()
		}
		ev, perr := Prepare(line, "", at, hs, rawevent.SourceReplay)
		switch {
		case perr == nil:
			batch = append(batch, ev)
		case errors.Is(perr, ErrFiltered):
			st.Filtered++
			m.filtered(hs, rawevent.SourceReplay)
		default:
			st.Malformed++
			m.rejected(hs, rawevent.SourceReplay, RejectReason(perr))
			fmt.Fprintf(report, "%s:%d: %v\n", name, st.Lines, perr)
		}
		if len(batch) == replayBatch {
			if err := flush(); err != nil {
				return st, err
			}
		}
		if err == io.EOF {
			break
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	log.Info("replay done", zap.String("file", name), zap.Int("lines", st.Lines), zap.Int("stored", st.Stored),
		zap.Int("duplicates", st.Duplicates), zap.Int("filtered", st.Filtered), zap.Int("malformed", st.Malformed))
	if st.Malformed > 0 {
		return st, fmt.Errorf("replay %s: %w: %d", name, ErrMalformedLines, st.Malformed)
	}
	return st, nil
}

// readLine reads one line (without the newline). A line longer than max is
// consumed and reported with tooLong.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		chunk, isPrefix, err := br.ReadLine()
		if !tooLong {
			line = append(line, chunk...)
			if len(line) > max {
				tooLong, line = true, nil
			}
		}
		if err != nil {
			if err == io.EOF && (len(line) > 0 || tooLong) {
				return line, tooLong, nil
			}
			return line, tooLong, err
		}
		if !isPrefix {
			return line, tooLong, nil
		}
	}
}
