// Package config loads the services' YAML configuration files and applies
// environment overrides, in the way of Dendrite and mautrix: every field has
// a default (the struct the caller passes in), the file overrides defaults,
// and the environment overrides the file.
//
// The environment variable of a field is the prefix followed by its YAML path
// in upper case joined by '_': with prefix RTC_AGG, the field `nats.urls`
// is RTC_AGG_NATS_URLS. Lists are comma-separated. Secrets are never set
// inline: fields ending in _file name a file that holds them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load fills dst (a pointer to a struct holding the defaults) from the YAML
// file at path (skipped when path is empty) and then from the environment.
// Unknown YAML fields are an error: a typo must not silently fall back to a
// default.
func Load(path, envPrefix string, dst any) error {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) { // an empty file keeps the defaults
			return fmt.Errorf("parse config %s: %w", path, err)
		}
	}
	return ApplyEnv(envPrefix, dst, os.LookupEnv)
}

// ApplyEnv sets the fields of dst that have an environment variable; lookup is
// os.LookupEnv in production. All bad values are reported together.
func ApplyEnv(prefix string, dst any, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("config: ApplyEnv needs a pointer to a struct")
	}
	var errs []error
	walk(v.Elem(), prefix, lookup, &errs)
	return errors.Join(errs...)
}

var durationType = reflect.TypeFor[time.Duration]()

func walk(v reflect.Value, prefix string, lookup func(string) (string, bool), errs *[]error) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		name := tag[0]
		if name == "-" {
			continue
		}
		if f.Anonymous && slices.Contains(tag[1:], "inline") && f.Type.Kind() == reflect.Struct {
			walk(v.Field(i), prefix, lookup, errs) // its fields are the parent's
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		env := prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			walk(fv, env, lookup, errs)
			continue
		}
		raw, ok := lookup(env)
		if !ok {
			continue
		}
		if err := set(fv, raw); err != nil {
			*errs = append(*errs, fmt.Errorf("%s=%q: %w", env, raw, err))
		}
	}
}

func set(fv reflect.Value, raw string) error {
	if fv.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return err
		}
		fv.SetFloat(n)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("lists of %s cannot be set from the environment", fv.Type().Elem())
		}
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		fv.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("a %s cannot be set from the environment", fv.Type())
	}
	return nil
}

// ReadSecretFile reads a secret from a file, trimming surrounding white space.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}
