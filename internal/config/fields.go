package config

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	envparse "github.com/caarlos0/env/v11"
)

// field is one variable: a field of Config and what its tags say.
type field struct {
	index   int    // in Config
	name    string // the Go field's, as envparse.ParseError names it
	key     string // the variable's
	def     string
	doc     string
	seconds bool     // unit:"s"
	oneOf   []string // oneof
	schemes []string // scheme
	lo, hi  string   // range
	redact  string
}

// fields describes Config, in the order of its fields.
var fields = describe(reflect.TypeFor[Config]())

// describe reads the tags of t's fields. A malformed tag is a programming error: it panics,
// and so fails every test of the package.
func describe(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
		if key == "" {
			panic("config: field " + sf.Name + " has no env tag")
		}
		f := field{
			index: i, name: sf.Name, key: key, def: sf.Tag.Get("envDefault"), doc: sf.Tag.Get("doc"),
			seconds: sf.Tag.Get("unit") == "s",
			oneOf:   strings.Fields(sf.Tag.Get("oneof")),
			schemes: strings.Fields(sf.Tag.Get("scheme")),
			redact:  sf.Tag.Get("redact"),
		}
		if unit := sf.Tag.Get("unit"); unit != "" && (unit != "s" || sf.Type != durationType) {
			panic("config: " + key + ": unit must be s, on a time.Duration")
		}
		if r := sf.Tag.Get("range"); r != "" {
			var ok bool
			if f.lo, f.hi, ok = strings.Cut(r, ","); !ok {
				panic("config: " + key + `: range must be "lo,hi"`)
			}
			switch { // the bounds must read as the field's kind
			case sf.Type == durationType && !f.seconds:
				mustDuration(f.lo)
				mustDuration(f.hi)
			case sf.Type.Kind() == reflect.Float64:
				mustFloat(f.lo)
				mustFloat(f.hi)
			default:
				mustInt(f.lo)
				mustInt(f.hi)
			}
		}
		if !slices.Contains([]string{"", "mask", "url", "omit"}, f.redact) {
			panic("config: " + key + ": redact must be mask, url or omit")
		}
		if f.doc == "" {
			panic("config: " + key + " has no doc tag")
		}
		out = append(out, f)
	}
	return out
}

func varsOf(fs []field) []Var {
	out := make([]Var, len(fs))
	for i, f := range fs {
		out[i] = Var{Name: f.key, Default: f.def, Doc: f.doc}
	}
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// parsers replace env's own for the kinds of Config's fields, so that a value that cannot be
// read gets the same message whatever its variable.
var parsers = map[reflect.Type]envparse.ParserFunc{
	reflect.TypeFor[int](): func(s string) (any, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("must be a whole number, got %q", s)
		}
		return n, nil
	},
	reflect.TypeFor[int64](): func(s string) (any, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("must be a whole number, got %q", s)
		}
		return n, nil
	},
	reflect.TypeFor[float64](): func(s string) (any, error) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("must be a number, got %q", s)
		}
		return f, nil
	},
	reflect.TypeFor[bool](): func(s string) (any, error) {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("must be true or false, got %q", s)
		}
		return b, nil
	},
	durationType: func(s string) (any, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("must be a duration like 100ms or 2s, got %q", s)
		}
		return d, nil
	},
}

// load fills c from getenv: each value trimmed, a blank one replaced by its default, then
// read by env into its field's type and checked against its tags.
func load(c *Config, getenv func(string) string) *problems {
	p := &problems{}
	raw := make(map[string]string, len(fields))
	for _, f := range fields {
		v := strings.TrimSpace(getenv(f.key))
		if v == "" {
			v = f.def
		}
		if len(f.oneOf) > 0 {
			v = strings.ToLower(v)
		}
		if f.seconds && v != "" {
			if _, err := strconv.Atoi(v); err != nil {
				p.add(f.key, "must be a whole number, got %q", v)
			}
			v += "s"
		}
		raw[f.key] = v
	}
	err := envparse.ParseWithOptions(c, envparse.Options{Environment: raw, FuncMap: parsers})
	if agg := (envparse.AggregateError{}); errors.As(err, &agg) {
		for _, e := range agg.Errors {
			if pe := (envparse.ParseError{}); errors.As(e, &pe) {
				p.addErr(keyOf(pe.Name), pe.Err)
			} else {
				p.addErr("", e)
			}
		}
	} else if err != nil {
		p.addErr("", err)
	}

	v := reflect.ValueOf(c).Elem()
	for _, f := range fields {
		if p.failed(f.key) {
			continue
		}
		fv := v.Field(f.index)
		if fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String {
			fv.Set(reflect.ValueOf(tidyList(fv.Interface().([]string))))
		}
		if err := f.check(fv); err != nil {
			p.addErr(f.key, err)
		}
	}
	return p
}

func keyOf(name string) string {
	for _, f := range fields {
		if f.name == name {
			return f.key
		}
	}
	return name
}

// tidyList drops the blanks around and between the items of a comma-separated list.
func tidyList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// check holds v, the value of f, to f's oneof, scheme and range tags.
func (f field) check(v reflect.Value) error {
	if len(f.oneOf) > 0 && !slices.Contains(f.oneOf, v.String()) {
		return fmt.Errorf("must be one of %s, got %q", strings.Join(f.oneOf, ", "), v.String())
	}
	if len(f.schemes) > 0 && v.String() != "" {
		u, err := url.Parse(v.String())
		if err != nil {
			return errors.New("is not a URL")
		}
		if !slices.Contains(f.schemes, u.Scheme) {
			return fmt.Errorf("must use scheme %s, got %q", strings.Join(f.schemes, ", "), u.Scheme)
		}
	}
	if f.lo == "" {
		return nil
	}
	switch {
	case v.Type() == durationType && f.seconds:
		lo, hi, n := mustInt(f.lo), mustInt(f.hi), v.Int()/int64(time.Second)
		if n < lo || n > hi {
			return fmt.Errorf("must be between %d and %d, got %d", lo, hi, n)
		}
	case v.Type() == durationType:
		lo, hi, d := mustDuration(f.lo), mustDuration(f.hi), time.Duration(v.Int())
		if d < lo || d > hi {
			return fmt.Errorf("must be between %s and %s, got %s", lo, hi, d)
		}
	case v.CanInt():
		lo, hi, n := mustInt(f.lo), mustInt(f.hi), v.Int()
		if n < lo || n > hi {
			return fmt.Errorf("must be between %d and %d, got %d", lo, hi, n)
		}
	case v.CanFloat():
		lo, hi, x := mustFloat(f.lo), mustFloat(f.hi), v.Float()
		if !(x >= lo && x <= hi) {
			return fmt.Errorf("must be between %g and %g, got %g", lo, hi, x)
		}
	default:
		panic("config: " + f.key + ": range on a " + v.Type().String())
	}
	return nil
}

func mustInt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic("config: range bound " + s + ": " + err.Error())
	}
	return n
}

func mustFloat(s string) float64 {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic("config: range bound " + s + ": " + err.Error())
	}
	return x
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic("config: range bound " + s + ": " + err.Error())
	}
	return d
}

// redacted is Config.Redacted.
func redacted(c Config) []any {
	v := reflect.ValueOf(c)
	out := make([]any, 0, 2*len(fields))
	for _, f := range fields {
		fv := v.Field(f.index)
		var shown any
		switch f.redact {
		case "omit":
			continue
		case "mask":
			switch {
			case fv.Kind() == reflect.Slice:
				shown = fv.Len()
			case fv.IsZero():
				shown = ""
			default:
				shown = "***"
			}
		case "url":
			if s := fv.String(); s != "" {
				shown = RedactURL(s)
			} else {
				shown = ""
			}
		default:
			if fv.Type() == durationType {
				shown = time.Duration(fv.Int()).String()
			} else {
				shown = fv.Interface()
			}
		}
		out = append(out, strings.ToLower(f.key), shown)
	}
	return out
}
