package validate

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// scalerFiles maps a KEDA trigger type to the source file of its scaler in
// the KEDA module, whose `keda:"name=..."` struct tags define the trigger's
// metadata keys.
var scalerFiles = map[string]string{
	"prometheus":     "pkg/scalers/prometheus_scaler.go",
	"nats-jetstream": "pkg/scalers/nats_jetstream_scaler.go",
}

var kedaTagRe = regexp.MustCompile("keda:\"([^\"]*)\"")

// ScalerMetadata reads the metadata keys a KEDA scaler accepts from the KEDA
// module's source (the version in go.mod): key -> required (neither
// optional nor defaulted). The ScaledObject type keeps trigger metadata as a
// map of strings, so the Go types alone cannot catch a misspelt key.
func ScalerMetadata(triggerType string) (map[string]bool, error) {
	file, ok := scalerFiles[triggerType]
	if !ok {
		return nil, fmt.Errorf("trigger type %q: no scaler source known to this validation", triggerType)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2").Output()
	if err != nil {
		return nil, fmt.Errorf("locate the KEDA module: %w", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), file))
	if err != nil {
		return nil, fmt.Errorf("read KEDA's %s scaler: %w", triggerType, err)
	}
	keys := map[string]bool{}
	for _, m := range kedaTagRe.FindAllStringSubmatch(string(src), -1) {
		name, required := "", true
		for _, part := range strings.Split(m[1], ",") {
			part = strings.TrimSpace(part)
			switch {
			case strings.HasPrefix(part, "name="):
				name = strings.TrimPrefix(part, "name=")
			case part == "optional" || strings.HasPrefix(part, "default="):
				required = false
			case strings.HasPrefix(part, "order=") && !strings.Contains(part, "triggerMetadata"):
				name = "" // authentication parameters only
			}
		}
		if name != "" {
			keys[name] = keys[name] || required
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("KEDA's %s scaler: no metadata keys found in %s", triggerType, file)
	}
	return keys, nil
}
