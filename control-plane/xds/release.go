package xds

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshward/meshward/models"
)

// Release is a model version as the server serves it: which section each
// workload's nodes receive.
type Release struct {
	// Version names the release (store.Release's version).
	Version string
	// Sections maps each workload with a section of its own, and
	// models.GlobalWorkload for the fallback every other group receives,
	// to the section's sha256.
	Sections map[string]string
}

// sectionFor is the section a group receives: its own, else the fallback
// ("" when the release has neither).
func (r *Release) sectionFor(group string) string {
	if sha, ok := r.Sections[group]; ok {
		return sha
	}
	return r.Sections[models.GlobalWorkload]
}

// Loader reads encoded sections: the sections wanted, by workload and
// sha256 (store.Store.SectionsOf).
type Loader interface {
	SectionsOf(ctx context.Context, want map[string]string) (map[string][]byte, error)
}

// Sections is a Loader over sections in memory, by workload.
type Sections map[string][]byte

// SectionsOf implements Loader.
func (m Sections) SectionsOf(_ context.Context, want map[string]string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(want))
	for w, sha := range want {
		b, ok := m[w]
		if !ok {
			return nil, fmt.Errorf("no section for %s", w)
		}
		s, err := models.DecodeSection(b)
		if err != nil {
			return nil, err
		}
		if s.SHA256() != sha {
			return nil, fmt.Errorf("the section of %s is %.12s, not %.12s", w, s.SHA256(), sha)
		}
		out[w] = b
	}
	return out, nil
}

// ReleaseOf splits a whole model into the release of its sections (the
// section of each workload it has a part for, and its fallback), with a
// Loader holding them. version names it.
func ReleaseOf(version string, m *models.Model) (*Release, Sections, error) {
	r := &Release{Version: version, Sections: map[string]string{}}
	secs := Sections{}
	names := []string{models.GlobalWorkload}
	for name := range m.Workloads {
		names = append(names, name)
	}
	for _, name := range names {
		b, err := models.EncodeSection(m, name)
		if err != nil {
			return nil, nil, err
		}
		s, err := models.DecodeSection(b)
		if err != nil {
			return nil, nil, err
		}
		r.Sections[s.SectionFor], secs[s.SectionFor] = s.SHA256(), b
	}
	return r, secs, nil
}

// served is what the server serves: the stable release, the canary (nil
// when none), and the sections they name, held as their encoding without
// the content model, which a round's sections share and is held once.
type served struct {
	stable, canary *Release
	sections       map[string]heldSection // by sha256
	contents       map[[32]byte][]byte
}

type heldSection struct {
	rest    []byte
	content [32]byte
}

func newServed() served {
	return served{sections: map[string]heldSection{}, contents: map[[32]byte][]byte{}}
}

// encoded is a held section's encoding (checked when it was loaded).
func (sv *served) encoded(sha string) ([]byte, bool) {
	h, ok := sv.sections[sha]
	if !ok {
		return nil, false
	}
	c := sv.contents[h.content]
	b := make([]byte, 0, len(h.rest)+len(c))
	return append(append(b, h.rest...), c...), true
}

// Apply makes what is served match a desired state — the stable release
// and the canary (nil when none) — loading the sections it does not hold
// and publishing to each group only when its section changed, so a release
// that changes one workload's section pushes to that group alone. A nil
// stable release changes nothing; a section that fails to load or check
// changes nothing either: the last good state stays.
func (s *Server) Apply(ctx context.Context, stable, canary *Release, load Loader) error {
	if stable == nil {
		return nil
	}
	if canary != nil && canary.Version == stable.Version {
		canary = nil
	}
	loaded := map[string]heldSection{}
	contents := map[[32]byte][]byte{}
	for _, r := range []*Release{stable, canary} {
		if r == nil {
			continue
		}
		// The sections not held, by workload (one release names one
		// section per workload; the stable and the canary may differ).
		want := map[string]string{}
		s.mu.Lock()
		for w, sha := range r.Sections {
			if _, held := s.served.sections[sha]; !held {
				if _, got := loaded[sha]; !got {
					want[w] = sha
				}
			}
		}
		s.mu.Unlock()
		if len(want) == 0 {
			continue
		}
		if load == nil {
			return errors.New("refusing to publish: sections to load and no loader")
		}
		got, err := load.SectionsOf(ctx, want)
		if err != nil {
			return fmt.Errorf("refusing to publish: %w", err)
		}
		for w, sha := range want {
			b := got[w]
			m, err := models.DecodeSection(b)
			if err != nil {
				return fmt.Errorf("refusing to publish the section of %s: %w", w, err)
			}
			if m.SHA256() != sha || m.SectionFor != w {
				return fmt.Errorf("refusing to publish: the section loaded for %s is %.12s of %s, not %.12s", w, m.SHA256(), m.SectionFor, sha)
			}
			rest, content, err := models.SplitSection(b)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(content)
			loaded[sha] = heldSection{rest: rest, content: sum}
			contents[sum] = content
		}
	}

	s.mu.Lock()
	for sha, h := range loaded {
		s.served.sections[sha] = h
	}
	for k, c := range contents {
		if _, ok := s.served.contents[k]; !ok {
			s.served.contents[k] = c
		}
	}
	s.served.stable, s.served.canary = stable, canary
	// Let go of what neither release names any more.
	keep, keepContent := map[string]bool{}, map[[32]byte]bool{}
	for _, r := range []*Release{stable, canary} {
		if r != nil {
			for _, sha := range r.Sections {
				keep[sha] = true
			}
		}
	}
	for sha, h := range s.served.sections {
		if !keep[sha] {
			delete(s.served.sections, sha)
		} else {
			keepContent[h.content] = true
		}
	}
	for k := range s.served.contents {
		if !keepContent[k] {
			delete(s.served.contents, k)
		}
	}
	groups := s.groupList()
	s.mu.Unlock()
	var errs []error
	for _, g := range groups {
		errs = append(errs, s.publishGroup(g))
	}
	return errors.Join(errs...)
}

// Publish makes a release the one every group is served (ending any
// canary).
func (s *Server) Publish(ctx context.Context, r *Release, load Loader) error {
	return s.Apply(ctx, r, nil, load)
}

// PublishCanary sends a candidate release to the canary share of each
// group's nodes (Config.CanaryShare, by a stable hash of their ids) — of the
// groups whose section it changes; the others are sent nothing. The other
// nodes keep the stable release until Promote, and Rollback returns the
// canaries to it.
func (s *Server) PublishCanary(ctx context.Context, r *Release, load Loader) error {
	s.mu.Lock()
	stable := s.served.stable
	s.mu.Unlock()
	if stable == nil {
		return errors.New("a canary needs a stable model to compare with: publish one first")
	}
	return s.Apply(ctx, stable, r, load)
}

// Promote makes the canary release the stable one, for every node (the
// groups whose section it changed are sent it; nothing else moves).
func (s *Server) Promote(ctx context.Context) error {
	s.mu.Lock()
	canary := s.served.canary
	s.mu.Unlock()
	if canary == nil {
		return errors.New("no canary to promote")
	}
	return s.Apply(ctx, canary, nil, nil)
}

// Rollback returns the canary nodes to the stable release.
func (s *Server) Rollback(ctx context.Context) error {
	s.mu.Lock()
	stable, had := s.served.stable, s.served.canary != nil
	s.mu.Unlock()
	if !had {
		return errors.New("no canary to roll back")
	}
	return s.Apply(ctx, stable, nil, nil)
}

// Version returns the stable release's version ("" before any).
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served.stable == nil {
		return ""
	}
	return s.served.stable.Version
}

// CanaryVersion returns the canary release's version ("" when none is out).
func (s *Server) CanaryVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served.canary == nil {
		return ""
	}
	return s.served.canary.Version
}

// SectionVersion returns the sha256 of the section a group's stable nodes
// are served ("" when none).
func (s *Server) SectionVersion(group string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served.stable == nil {
		return ""
	}
	return s.served.stable.sectionFor(group)
}

// publishGroup sets a group's stable and canary snapshots to the sections
// served, each only when its version differs from the snapshot's: a client
// already at a version is sent nothing anyway, and this spares building the
// resource — a release is applied to every group, and most keep theirs.
func (s *Server) publishGroup(group string) error {
	s.mu.Lock()
	if s.served.stable == nil {
		s.mu.Unlock()
		return nil
	}
	stableSHA := s.served.stable.sectionFor(group)
	canarySHA := stableSHA
	if s.served.canary != nil {
		canarySHA = s.served.canary.sectionFor(group)
	}
	_, okS := s.served.sections[stableSHA]
	_, okC := s.served.sections[canarySHA]
	s.mu.Unlock()
	if !okS || !okC {
		// No section for this group, nor a fallback: it keeps what it has.
		return nil
	}
	// The version names the section and what travels beside it: the
	// group's overlay (exceptions, mode) and, with RBAC, its rules.
	ovs := ""
	if _, d := s.overlays.get(group); d != "" {
		ovs = ".x" + d
	}
	suffix := ovs
	if s.cfg.RBAC {
		_, rv, err := s.RBACExtension(group)
		if err != nil {
			return err
		}
		suffix += "." + rv
	}
	var errs []error
	built := map[string]*cachev3.Snapshot{}
	for _, k := range []struct {
		canary bool
		sha    string
	}{{false, stableSHA}, {true, canarySHA}} {
		key := cacheKey(group, k.canary)
		if cur, err := s.cache.GetSnapshot(key); err == nil && cur.GetVersion(extensionType) == k.sha+suffix {
			continue
		}
		snap := built[k.sha]
		if snap == nil {
			s.mu.Lock()
			enc, ok := s.served.encoded(k.sha)
			s.mu.Unlock()
			if !ok {
				continue // replaced meanwhile; the next Apply publishes it
			}
			res, err := s.Extension(group, enc)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if snap, err = s.snapshot(group, k.sha+ovs, res); err != nil {
				errs = append(errs, err)
				continue
			}
			built[k.sha] = snap
		}
		errs = append(errs, s.cache.SetSnapshot(context.Background(), key, snap))
	}
	return errors.Join(errs...)
}

const extensionType = resourcev3.ExtensionConfigType
