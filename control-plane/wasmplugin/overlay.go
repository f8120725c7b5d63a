package wasmplugin

import (
	"encoding/json"
	"fmt"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
)

// Overlay returns the exceptions a workload's filters are given beside
// its section (its own and the mesh's): they travel in its pluginConfig
// under "exceptions", which meshward owns, and change without a new model.
type Overlay func(workload string) []enforcement.Rule

// ModeOverlay returns the mode a workload runs in given its template's
// (base; the filter's default when the template names none), or "" for the
// template's own. It may only lower the mode: a result that is not lower
// than base (enforce > monitor > learn), or not a mode, is ignored.
type ModeOverlay func(workload string, base pluginconfig.Mode) pluginconfig.Mode

// modeRank orders the modes by what they do to traffic; -1 for what is
// not a mode.
func modeRank(m pluginconfig.Mode) int {
	switch m {
	case pluginconfig.ModeEnforce:
		return 2
	case pluginconfig.ModeMonitor:
		return 1
	case pluginconfig.ModeLearn:
		return 0
	}
	return -1
}

// withOverlay adds a workload's exceptions and its mode to its pluginConfig
// (once it has a model: before, owned has it learn), checked by the
// filter's parser.
func (s *Syncer) withOverlay(pc map[string]any, workload string) (map[string]any, error) {
	delete(pc, "exceptions")
	if pc["model"] == nil {
		return pc, nil
	}
	changed := false
	if s.Mode != nil {
		base := pluginconfig.DefaultMode
		if m, _ := pc["mode"].(string); m != "" {
			base = pluginconfig.Mode(m)
		}
		if m := s.Mode(workload, base); modeRank(m) >= 0 && modeRank(m) < modeRank(base) {
			pc["mode"] = string(m)
			changed = true
		}
	}
	var rules []enforcement.Rule
	if s.Overlay != nil {
		rules = s.Overlay(workload)
	}
	if len(rules) > 0 {
		// As the generic JSON values the object is built of.
		b, err := json.Marshal(rules)
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		pc["exceptions"] = v
		changed = true
	}
	if !changed {
		return pc, nil
	}
	doc, err := json.Marshal(pc)
	if err != nil {
		return nil, err
	}
	if _, err := pluginconfig.Parse(doc, workload); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return pc, nil
}
