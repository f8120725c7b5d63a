package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
)

// Overlay is what a group's filter configuration carries beside its model
// section: the exceptions that hold for its workload (its own and the
// mesh's), and the mode it runs in when not the base's (a workload not
// ready yet runs in learn or monitor mode under -filter-learn-first). It
// changes without a new model: a group whose overlay changes is sent its
// configuration again, and no other.
type Overlay struct {
	Exceptions []enforcement.Rule
	Mode       pluginconfig.Mode
}

// Overlays says what each group's overlay is.
type Overlays func(group string) Overlay

// overlays holds the groups' overlays and their digests (the snapshot
// version's suffix).
type overlays struct {
	mu     sync.Mutex
	of     Overlays
	byG    map[string]Overlay
	digest map[string]string
}

// get returns a group's overlay and its digest ("" when empty).
func (o *overlays) get(group string) (Overlay, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d, ok := o.digest[group]; ok {
		return o.byG[group], d
	}
	if o.of == nil {
		return Overlay{}, ""
	}
	ov := o.of(group)
	d := ov.digest()
	if o.byG == nil {
		o.byG, o.digest = map[string]Overlay{}, map[string]string{}
	}
	o.byG[group], o.digest[group] = ov, d
	return ov, d
}

// forget drops a group's overlay (its group is gone).
func (o *overlays) forget(group string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.byG, group)
	delete(o.digest, group)
}

func (ov Overlay) digest() string {
	if len(ov.Exceptions) == 0 && ov.Mode == "" {
		return ""
	}
	b, _ := json.Marshal(ov)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// SetOverlays makes f the source of every group's overlay and sends the
// groups whose overlay changed their configuration again (only once a
// model is served: before it, groups run in learn mode).
func (s *Server) SetOverlays(f Overlays) error {
	s.mu.Lock()
	groups := s.groupList()
	serving := s.served.stable != nil
	s.mu.Unlock()
	o := &s.overlays
	o.mu.Lock()
	o.of = f
	var changed []string
	byG, digest := map[string]Overlay{}, map[string]string{}
	for _, g := range groups {
		ov := f(g)
		byG[g], digest[g] = ov, ov.digest()
		if old, ok := o.digest[g]; !ok || old != digest[g] {
			changed = append(changed, g)
		}
	}
	o.byG, o.digest = byG, digest
	o.mu.Unlock()
	if !serving {
		return nil
	}
	var errs []error
	for _, g := range changed {
		errs = append(errs, s.publishGroup(g))
	}
	return errors.Join(errs...)
}

// OverlayOf returns the overlay a group is served (for status and tests).
func (s *Server) OverlayOf(group string) Overlay {
	ov, _ := s.overlays.get(group)
	return ov
}
