package api_test

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The OpenAPI document, read from the source tree (the server embeds the
// same file).
func openAPI(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

// validateResponse checks a JSON body against the response schema the
// document declares for the path template and status.
func validateResponse(t testing.TB, path string, status int, body []byte) {
	t.Helper()
	doc := openAPI(t)
	op, ok := dig(doc, "paths", path, "get").(map[string]any)
	if !ok {
		t.Fatalf("openapi: no GET %s", path)
	}
	resp, ok := dig(op, "responses", strconv.Itoa(status)).(map[string]any)
	if !ok {
		t.Fatalf("openapi: GET %s declares no %d response", path, status)
	}
	resp = resolve(doc, resp)
	schema, ok := dig(resp, "content", "application/json", "schema").(map[string]any)
	if !ok {
		t.Fatalf("openapi: GET %s %d has no application/json schema", path, status)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("GET %s %d: not JSON: %v\n%s", path, status, err, body)
	}
	if errs := validate(doc, schema, v, "$"); len(errs) > 0 {
		t.Fatalf("GET %s %d does not match the OpenAPI document:\n%s\n%s", path, status, strings.Join(errs, "\n"), body)
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func resolve(doc map[string]any, s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
		next, ok := dig(doc, parts...).(map[string]any)
		if !ok {
			panic("openapi: unresolvable " + ref)
		}
		s = next
	}
}

// validate is the part of JSON Schema the document uses: type, required,
// properties, additionalProperties false, items, enum, pattern, minimum.
func validate(doc, schema map[string]any, v any, at string) []string {
	s := resolve(doc, schema)
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, at+": "+fmt.Sprintf(format, args...)) }
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		bad("%v is not one of %v", v, enum)
	}
	switch s["type"] {
	case nil:
		return errs
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, have %T", v)
			return errs
		}
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := m[r.(string)]; !ok {
					bad("required %q missing", r)
				}
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					bad("property %q is not in the document", k)
				}
				continue
			}
			errs = append(errs, validate(doc, ps, m[k], at+"."+k)...)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, have %T", v)
			return errs
		}
		items, _ := s["items"].(map[string]any)
		for i, x := range a {
			errs = append(errs, validate(doc, items, x, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, have %T", v)
			return errs
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			bad("%q does not match %s", str, p)
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			bad("want an integer, have %v", v)
		}
		if m, ok := s["minimum"].(float64); ok && f < m {
			bad("%v below the minimum %v", f, m)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, have %T", v)
		}
	default:
		bad("validator does not know type %v", s["type"])
	}
	return errs
}

// TestValidator: the validator refuses what the document does not allow
// (so that a passing response check means something).
func TestValidator(t *testing.T) {
	doc := openAPI(t)
	schema := map[string]any{"$ref": "#/components/schemas/HistoryPage"}
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"empty page", `{"sessions":[]}`, true},
		{"missing sessions", `{}`, false},
		{"unknown field", `{"sessions":[],"more":1}`, false},
		{"wrong kind", `{"sessions":[{"seq":1,"event":{"v":2,"id":"x","seq":1,"kind":"exploded","session_id":"s","room_id":"!r:h","application":"m.call","call_id":"","at":1,"participants":0,"users":0}}]}`, false},
		{"float seq", `{"sessions":[{"seq":1.5,"event":{"v":2,"id":"x","seq":1,"kind":"session_ended","session_id":"s","room_id":"!r:h","application":"m.call","call_id":"","at":1,"participants":0,"users":0}}]}`, false},
		{"good entry", `{"sessions":[{"seq":1,"event":{"v":2,"id":"x","seq":1,"kind":"session_ended","session_id":"s","room_id":"!r:h","application":"m.call","call_id":"","at":1,"participants":0,"users":0}}],"next_cursor":"1"}`, true},
		{"bad cursor", `{"sessions":[],"next_cursor":7}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tc.body), &v); err != nil {
				t.Fatal(err)
			}
			errs := validate(doc, schema, v, "$")
			if (len(errs) == 0) != tc.ok {
				t.Errorf("valid %v, want %v: %v", len(errs) == 0, tc.ok, errs)
			}
		})
	}
}
