package natsconn

import (
	"errors"
	"testing"
)

func TestCheckServerVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		ok      bool
	}{
		{"2.12.0", true}, {"2.12.15", true}, {"2.15.2", true}, {"v2.14.0", true}, {"3.0.0", true},
		{"2.12.0-beta.1", true}, {"2.11.9", false}, {"2.10.22", false}, {"1.4.1", false}, {"", false}, {"garbage", false},
	} {
		err := CheckServerVersion(tc.version)
		if (err == nil) != tc.ok {
			t.Errorf("CheckServerVersion(%q) = %v, want ok=%v", tc.version, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrServerTooOld) {
			t.Errorf("CheckServerVersion(%q): error %v is not ErrServerTooOld", tc.version, err)
		}
	}
}
