package simulate

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// traceFile writes a generated trace of n events into a temporary file.
func traceFile(tb testing.TB, n int) string {
	tb.Helper()
	var b bytes.Buffer
	if err := WriteTrace(&b, n, 1); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "trace.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkSimulateTrace: `rtcctl simulate` over the generated
// 50,000-event trace (the one `make bench` compares with matrix-js-sdk),
// output discarded.
func BenchmarkSimulateTrace(b *testing.B) {
	path := traceFile(b, 50_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code := Run(context.Background(), []string{path}, io.Discard, io.Discard); code != 0 {
			b.Fatalf("exit status %d", code)
		}
	}
	b.ReportMetric(50_000*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
