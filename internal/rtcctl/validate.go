package rtcctl

import (
	"errors"
	"fmt"
	"strings"
)

// maxIDBytes is the Matrix limit on room and user ids.
const maxIDBytes = 255

// RoomID is a room id given on the command line, as a flag or an argument
// of any command: it is checked when the command line is parsed (kong calls
// UnmarshalText), so that every command refuses the same things the same
// way, with exit status 2, instead of filtering on a room that cannot exist.
type RoomID string

// UnmarshalText checks a room id (CheckRoomID).
func (r *RoomID) UnmarshalText(b []byte) error {
	if err := CheckRoomID(string(b)); err != nil {
		return err
	}
	*r = RoomID(b)
	return nil
}

// CheckRoomID says why s is not a room id: '!' then an opaque part, and,
// except for room versions whose ids are a bare hash, ':' and a server name;
// at most 255 bytes. A room alias (#name:server) or a room name is refused
// with what to give instead. The characters are not checked: a homeserver
// may send room ids with any, and the operator must be able to name every
// room the pipeline holds.
func CheckRoomID(s string) error {
	switch {
	case s == "":
		return errors.New("empty room id: want !opaque:server")
	case strings.HasPrefix(s, "#"):
		return fmt.Errorf("%q is a room alias, not a room id: give the room id (!opaque:server; a client shows it in the room's settings)", s)
	case !strings.HasPrefix(s, "!"):
		return fmt.Errorf("%q is not a room id: a room id starts with '!' (!opaque:server), not a room name", s)
	}
	if err := checkIDChars(s); err != nil {
		return fmt.Errorf("room id %q: %w", s, err)
	}
	local, server, hasServer := strings.Cut(s[1:], ":")
	switch {
	case local == "":
		return fmt.Errorf("room id %q: nothing between '!' and ':'", s)
	case hasServer && server == "":
		return fmt.Errorf("room id %q: no server name after ':'", s)
	}
	return nil
}

// CheckUserID says why s is not a user id (@localpart:server).
func CheckUserID(s string) error {
	if !strings.HasPrefix(s, "@") {
		return fmt.Errorf("%q is not a user id: a user id is @localpart:server", s)
	}
	if err := checkIDChars(s); err != nil {
		return fmt.Errorf("user id %q: %w", s, err)
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" || server == "" {
		return fmt.Errorf("%q is not a user id: a user id is @localpart:server", s)
	}
	return nil
}

func checkIDChars(s string) error {
	if len(s) > maxIDBytes {
		return fmt.Errorf("%d bytes, more than Matrix allows (%d)", len(s), maxIDBytes)
	}
	return nil
}
