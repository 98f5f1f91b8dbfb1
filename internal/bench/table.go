package bench

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Verdict says whether a row's target is met.
type Verdict int

const (
	// Info rows have no target of their own (a baseline, a context figure).
	Info Verdict = iota
	Met
	Missed
	// Failed means the figure could not be measured: the step failed or
	// timed out. Its Note says why.
	Failed
)

func (v Verdict) String() string {
	switch v {
	case Met:
		return "yes"
	case Missed:
		return "NO (missed)"
	case Failed:
		return "ERROR"
	default:
		return "-"
	}
}

// Row is one line of the table.
type Row struct {
	Figure   string
	Measured string
	Baseline string // measured in the same run
	Target   string
	Verdict  Verdict
	// Note explains a miss or an error (printed under the table), or adds
	// context (sample counts, what the baseline is).
	Note string
}

// failedRows turns the figures a scenario would have produced into rows
// that say it failed, so the table still shows every figure.
func failedRows(figures []string, targets []string, err error) []Row {
	rows := make([]Row, len(figures))
	for i, f := range figures {
		rows[i] = Row{Figure: f, Measured: "-", Baseline: "-", Target: targets[i], Verdict: Failed, Note: err.Error()}
	}
	return rows
}

// WriteTable prints rows as one aligned table, then one line per note: the
// misses and errors first, in plain words.
func WriteTable(w io.Writer, rows []Row) error {
	header := []string{"figure", "measured", "baseline (same run)", "target", "met?"}
	cells := [][]string{header}
	for _, r := range rows {
		cells = append(cells, []string{r.Figure, orDash(r.Measured), orDash(r.Baseline), orDash(r.Target), r.Verdict.String()})
	}
	widths := make([]int, len(header))
	for _, line := range cells {
		for i, c := range line {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	writeLine := func(line []string) {
		for i, c := range line {
			if i > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(c)
			if i < len(line)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
			}
		}
		b.WriteString("\n")
	}
	writeLine(cells[0])
	for i, wd := range widths {
		if i > 0 {
			b.WriteString("-+-")
		}
		b.WriteString(strings.Repeat("-", wd))
	}
	b.WriteString("\n")
	for _, line := range cells[1:] {
		writeLine(line)
	}

	var missed, failed, notes []string
	for _, r := range rows {
		switch {
		case r.Verdict == Missed:
			missed = append(missed, fmt.Sprintf("MISSED  %s: measured %s, target %s.%s", r.Figure, r.Measured, r.Target, suffix(r.Note)))
		case r.Verdict == Failed:
			failed = append(failed, fmt.Sprintf("ERROR   %s: %s", r.Figure, r.Note))
		case r.Note != "":
			notes = append(notes, fmt.Sprintf("note    %s: %s", r.Figure, r.Note))
		}
	}
	if len(missed)+len(failed)+len(notes) > 0 {
		b.WriteString("\n")
	}
	for _, group := range [][]string{missed, failed, notes} {
		for _, l := range group {
			b.WriteString(l + "\n")
		}
	}
	if len(missed) == 0 && len(failed) == 0 {
		b.WriteString("every target with a measurement was met\n")
	} else {
		fmt.Fprintf(&b, "%d target(s) missed, %d figure(s) not measured\n", len(missed), len(failed))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func suffix(note string) string {
	if note == "" {
		return ""
	}
	return " " + note
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
