// Package simulate runs the room reducer offline over a JSON-lines file of
// Matrix events: `rtcctl simulate`.
package simulate

import (
	"context"
	"fmt"
	"io"
)

// Run is `rtcctl simulate [--until MS] [--sessions] FILE.jsonl`. It returns
// the process exit status. BEING IMPLEMENTED.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "simulate: not implemented yet")
	return 2
}
