package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/replay/runner"
)

// enforceFlags say how a replay judges: as monitor mode does (flag and let
// through) or as enforce mode does (graduated deny_reasons, exceptions
// applied: each scores line then says whether the request was denied).
type enforceFlags struct {
	mode        string
	denyReasons string
	exceptions  string
}

func (f *enforceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.mode, "mode", string(pluginconfig.ModeMonitor), "monitor (flag and let through) or enforce (deny as the filter in enforce mode does: graduated deny_reasons, exceptions applied)")
	fs.StringVar(&f.denyReasons, "deny-reasons", "", "with -mode enforce: the filters' deny_reasons, comma-separated (reasons or the groups default, values, content, structure, size, none; empty: default)")
	fs.StringVar(&f.exceptions, "exceptions", "", "with -mode enforce: a JSON file of exceptions in force (what GET /api/v1/exceptions or meshward allow -list -json prints, or a list of them)")
}

// enforce returns the runner's Enforce (nil in monitor mode).
func (f *enforceFlags) enforce() (*runner.Enforce, error) {
	switch pluginconfig.Mode(f.mode) {
	case pluginconfig.ModeMonitor:
		if f.denyReasons != "" || f.exceptions != "" {
			return nil, fmt.Errorf("%w: -deny-reasons and -exceptions need -mode enforce", ErrUsage)
		}
		return nil, nil
	case pluginconfig.ModeEnforce:
	default:
		return nil, fmt.Errorf("%w: -mode %q: want monitor or enforce", ErrUsage, f.mode)
	}
	e := &runner.Enforce{}
	if f.denyReasons != "" {
		e.DenyReasons = strings.Split(f.denyReasons, ",")
		if _, err := enforcement.ParseDenyReasons(e.DenyReasons); err != nil {
			return nil, fmt.Errorf("%w: -deny-reasons: %w", ErrUsage, err)
		}
	}
	if f.exceptions != "" {
		es, err := readExceptions(f.exceptions)
		if err != nil {
			return nil, err
		}
		for _, x := range es {
			e.Exceptions = append(e.Exceptions, x.Rule)
		}
	}
	return e, nil
}

// readExceptions reads a file of exceptions: {"exceptions":[…]} or […].
// Each must be well formed (expiry aside: an expired one is ignored as the
// filter ignores it).
func readExceptions(path string) ([]exception.Exception, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-exceptions: %w", err)
	}
	var doc struct {
		Exceptions []exception.Exception `json:"exceptions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		if err2 := json.Unmarshal(b, &doc.Exceptions); err2 != nil {
			return nil, fmt.Errorf("-exceptions %s: neither {\"exceptions\":[…]} nor a list: %w", path, err)
		}
	}
	var errs []error
	for i := range doc.Exceptions {
		if err := doc.Exceptions[i].CheckForm(); err != nil {
			errs = append(errs, fmt.Errorf("-exceptions %s: [%d]: %w", path, i, err))
		}
	}
	return doc.Exceptions, errors.Join(errs...)
}
