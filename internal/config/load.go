package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable the loader reads.
const EnvPrefix = "ANSWER_RELAY_"

// Source tells Load where settings come from.
type Source struct {
	// File is the YAML file; empty for none.
	File string
	// Env looks up an environment variable; nil for none (os.Getenv in
	// production).
	Env func(string) string
	// Flags are the command-line settings already parsed by a FlagSet
	// made with Flags; nil for none.
	Flags *flag.FlagSet
}

// Load fills dst, a pointer to a struct already holding its defaults, from
// the YAML file, then the environment, then the flags: a later source
// overrides an earlier one (flag > env > file).
//
// Every leaf field with a yaml tag is a setting. Its environment variable
// is derived mechanically: EnvPrefix plus the upper-cased yaml path joined
// by "_" (smtp.listen → ANSWER_RELAY_SMTP_LISTEN); the variable with
// "_FILE" appended names a file holding the value, for secrets and long
// lists. Its flag is the dotted path (-smtp.listen). Lists are comma
// separated in the environment and in flags. Unknown keys in the file are
// an error naming the key, as is a value of the wrong type.
func Load(dst any, src Source) error {
	root := reflect.ValueOf(dst)
	if root.Kind() != reflect.Pointer || root.Elem().Kind() != reflect.Struct {
		return errors.New("config: Load needs a pointer to a struct")
	}
	if src.File != "" {
		b, err := os.ReadFile(src.File)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := decodeYAML(b, dst); err != nil {
			return fmt.Errorf("config: %s: %w", src.File, err)
		}
	}
	for _, s := range settings(root.Elem(), "") {
		if src.Env != nil {
			name := EnvName(s.path)
			if v := src.Env(name); v != "" {
				if err := s.set(v); err != nil {
					return fmt.Errorf("config: %s: %w", name, err)
				}
			} else if file := src.Env(name + "_FILE"); file != "" {
				b, err := os.ReadFile(file)
				if err != nil {
					return fmt.Errorf("config: %s_FILE: %w", name, err)
				}
				if err := s.set(strings.TrimSpace(string(b))); err != nil {
					return fmt.Errorf("config: %s_FILE: %w", name, err)
				}
			}
		}
	}
	if src.Flags != nil {
		var err error
		src.Flags.Visit(func(f *flag.Flag) {
			if err != nil {
				return
			}
			for _, s := range settings(root.Elem(), "") {
				if s.path == f.Name {
					if e := s.set(f.Value.String()); e != nil {
						err = fmt.Errorf("config: -%s: %w", f.Name, e)
					}
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeYAML(b []byte, dst any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(dst)
}

// EnvName is the environment variable of a setting's dotted path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(path))
}

// Flags returns a FlagSet with one string flag per setting of the struct
// that dst points to, named by its dotted path, for Source.Flags. The flags'
// defaults are left empty: an unset flag overrides nothing.
func Flags(name string, dst any) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	for _, s := range settings(reflect.ValueOf(dst).Elem(), "") {
		fs.String(s.path, "", "sets "+s.path+" (env "+EnvName(s.path)+")")
	}
	return fs
}

// Paths lists the dotted paths of every setting of the struct dst points to.
func Paths(dst any) []string {
	var out []string
	for _, s := range settings(reflect.ValueOf(dst).Elem(), "") {
		out = append(out, s.path)
	}
	return out
}

// setting is one leaf field of a config struct.
type setting struct {
	path string
	v    reflect.Value
}

var (
	durationType = reflect.TypeFor[time.Duration]()
)

// settings walks the yaml-tagged fields of v. Slices of structs (such as a
// list of webhook endpoints) are file-only and skipped.
func settings(v reflect.Value, prefix string) []setting {
	var out []setting
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		opts := strings.Split(f.Tag.Get("yaml"), ",")
		tag := opts[0]
		if tag == "-" || !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if tag == "" && fv.Kind() == reflect.Struct && (f.Anonymous || slices.Contains(opts[1:], "inline")) {
			out = append(out, settings(fv, prefix)...)
			continue
		}
		if tag == "" {
			continue
		}
		path := prefix + tag
		switch {
		case fv.Kind() == reflect.Struct:
			out = append(out, settings(fv, path+".")...)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() != reflect.String:
			continue
		default:
			out = append(out, setting{path: path, v: fv})
		}
	}
	return out
}

// set parses s into the setting's field by its type.
func (st setting) set(s string) error {
	v := st.v
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration: %q", s)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		v.SetBool(b)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v.OverflowInt(n) {
			return fmt.Errorf("not an integer: %q", s)
		}
		v.SetInt(n)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var items []string
		for _, item := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		list := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			list.Index(i).SetString(item)
		}
		v.Set(list)
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}
