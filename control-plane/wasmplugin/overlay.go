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

// withOverlay adds a workload's exceptions to its pluginConfig (once it
// has a model: learn mode denies nothing), checked by the filter's parser.
func (s *Syncer) withOverlay(pc map[string]any, workload string) (map[string]any, error) {
	delete(pc, "exceptions")
	if s.Overlay == nil || pc["model"] == nil {
		return pc, nil
	}
	rules := s.Overlay(workload)
	if len(rules) == 0 {
		return pc, nil
	}
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
	doc, err := json.Marshal(pc)
	if err != nil {
		return nil, err
	}
	if _, err := pluginconfig.Parse(doc, workload); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return pc, nil
}
