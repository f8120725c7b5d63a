package enforce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/policy"
)

// Dir is a sink for GitOps: each standing decision is one YAML file of
// AuthorizationPolicies, <dir>/<id>.yaml, rewritten on promotion and
// removed on expiry or release. A restart reads the files back.
type Dir struct {
	path  string
	rules decide.Rules
	log   *slog.Logger
	mu    sync.Mutex
	state map[string]decide.Decision
	fence func(context.Context) error
}

// SetFence makes every change ask f first and not happen when it answers
// an error (call before use).
func (d *Dir) SetFence(f func(context.Context) error) {
	d.mu.Lock()
	d.fence = f
	d.mu.Unlock()
}

func (d *Dir) fenced(ctx context.Context) error {
	if d.fence == nil {
		return nil
	}
	if err := d.fence(ctx); err != nil {
		return fmt.Errorf("not written: %w", err)
	}
	return nil
}

// Rebuild replaces what the sink holds with the decisions the files carry
// (a replica taking the lead reads what the last leader wrote).
func (d *Dir) Rebuild(context.Context) error {
	ds, err := ReadDir(d.path)
	if err != nil {
		return err
	}
	state := map[string]decide.Decision{}
	for _, dec := range ds {
		state[dec.ID] = dec
	}
	d.mu.Lock()
	d.state = state
	d.mu.Unlock()
	return nil
}

// NewDir returns a sink writing under path (created if missing), with the
// decisions already there loaded.
func NewDir(path string, rules decide.Rules, log *slog.Logger) (*Dir, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, err
	}
	d := &Dir{path: path, rules: rules, log: log, state: map[string]decide.Decision{}}
	ds, err := ReadDir(path)
	for _, dec := range ds {
		d.state[dec.ID] = dec
	}
	return d, err
}

// ReadDir reads the decisions the YAML files under path carry (files
// that are not meshward's policies are skipped).
func ReadDir(path string) ([]decide.Decision, error) {
	files, err := filepath.Glob(filepath.Join(path, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var out []decide.Decision
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var have *decide.Decision
		for i, doc := range strings.Split(string(b), "\n---\n") {
			var ap securityv1.AuthorizationPolicy
			if err := yaml.UnmarshalStrict([]byte(doc), &ap); err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", f, i+1, err))
				break
			}
			d, err := policy.FromIstio(&ap)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
				break
			}
			if have == nil {
				have = &d
			} else {
				m := decide.Merge(*have, d)
				have = &m
			}
		}
		if have != nil {
			out = append(out, *have)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}

func (d *Dir) file(id string) string { return filepath.Join(d.path, id+".yaml") }

// Apply writes a decision's file (a suppressed decision is only logged).
func (d *Dir) Apply(ctx context.Context, dec decide.Decision) error {
	if dec.Suppressed != "" {
		d.log.Info("quarantine decision", "action", "suppressed", "decision", dec.ID, "principal", dec.Principal, "suppressed", dec.Suppressed)
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.fenced(ctx); err != nil {
		return err
	}
	for _, have := range d.state {
		if have.Principal == dec.Principal {
			dec = decide.Merge(have, dec)
			break
		}
	}
	return d.write(dec, "quarantine")
}

func (d *Dir) write(dec decide.Decision, action string) error {
	aps, err := policy.Istio(dec)
	if err != nil {
		return err
	}
	b, err := policy.YAML(aps)
	if err != nil {
		return err
	}
	tmp := d.file(dec.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.file(dec.ID)); err != nil {
		return err
	}
	d.state[dec.ID] = dec
	d.log.Info("quarantine decision", "action", action, "decision", dec.ID, "principal", dec.Principal, "mode", string(dec.Mode),
		"targets", len(dec.Deny), "expires", dec.Expires, "file", d.file(dec.ID))
	return nil
}

// Release removes a decision's file.
func (d *Dir) Release(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.fenced(ctx); err != nil {
		return err
	}
	return d.remove(id, "release")
}

func (d *Dir) remove(id, action string) error {
	dec, ok := d.state[id]
	if !ok {
		return fmt.Errorf("no such quarantine: %s", id)
	}
	// run --out writes the Envoy RBAC form beside the YAML: it goes too.
	for _, f := range []string{d.file(id), filepath.Join(d.path, id+".envoy-rbac.json")} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	delete(d.state, id)
	d.log.Info("quarantine decision", "action", action, "decision", id, "principal", dec.Principal)
	return nil
}

// Tick promotes the dry runs that are due and removes what expired.
func (d *Dir) Tick(ctx context.Context, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := false
	for _, dec := range d.state {
		at, ok := decide.Promotion(dec, d.rules)
		due = due || !now.Before(dec.Expires) || ok && !now.Before(at)
	}
	if !due {
		return nil
	}
	if err := d.fenced(ctx); err != nil {
		return err
	}
	var errs []error
	for id, dec := range d.state {
		if !now.Before(dec.Expires) {
			errs = append(errs, d.remove(id, "expire"))
		} else if at, ok := decide.Promotion(dec, d.rules); ok && !now.Before(at) {
			dec.Mode = decide.Enforce
			errs = append(errs, d.write(dec, "promote"))
		}
	}
	return errors.Join(errs...)
}

// Active is how many decisions stand.
func (d *Dir) Active() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.state)
}

// Standing returns the standing decisions, by id.
func (d *Dir) Standing() []decide.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return sortedDecisions(d.state)
}

// Holds says whether a decision stands.
func (d *Dir) Holds(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.state[id]
	return ok
}

func sortedDecisions(m map[string]decide.Decision) []decide.Decision {
	out := make([]decide.Decision, 0, len(m))
	for _, d := range m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
