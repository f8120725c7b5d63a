package enforce

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/store"
)

// StoreKeeper keeps standing decisions in the control plane's store, so
// every replica and the next run read the same ones.
type StoreKeeper struct{ Store *store.Store }

// Save keeps a decision under its id.
func (k StoreKeeper) Save(ctx context.Context, d decide.Decision) error {
	return k.Store.PutQuarantine(ctx, d.ID, d)
}

// Delete forgets a decision.
func (k StoreKeeper) Delete(ctx context.Context, id string) error {
	return k.Store.DeleteQuarantine(ctx, id)
}

// Load reads every kept decision. One that does not decode is an error
// naming it: the caller keeps what it has rather than publish a partial set.
func (k StoreKeeper) Load(ctx context.Context) (map[string]decide.Decision, error) {
	raw, err := k.Store.Quarantines(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]decide.Decision, len(raw))
	for id, b := range raw {
		var d decide.Decision
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("kept quarantine %s: %w", id, err)
		}
		if d.ID != id {
			return nil, fmt.Errorf("kept quarantine %s: holds decision %q", id, d.ID)
		}
		out[id] = d
	}
	return out, nil
}
