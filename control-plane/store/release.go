package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/models"
)

// A model version is a release: which section (models.EncodeSection) each
// workload's sidecars receive. Sections are what the control plane stores
// and serves; a whole-mesh model is never stored, so nothing grows with the
// mesh but the release's index.
//
//	<prefix>:{<workload>}:section:<sha256>  the section without its content model,
//	                                        after the content model's sha256 (hex)
//	<prefix>:content:<sha256>               a content model (shared by a round's sections)
//	<prefix>:model:<version>                the release (JSON: workload → section sha256)
//	<prefix>:models                         the versions kept, newest first
//
// A section's key is hash-tagged by its workload, so a Redis Cluster
// spreads them as it spreads the workloads' flows. A section is
// content-addressed by its own sha256 (its version: what xDS sends and the
// filters report), the content model by the sha256 of its encoding, and a
// release by the sha256 of its sorted (workload, section) pairs: storing
// anything twice is harmless, and a section no retrain changed is stored
// once for every release that has it.

// Release is a model version as the control plane rolls it out.
type Release struct {
	// Version is the sha256 of the release's sorted (workload, section)
	// pairs; set by PutRelease and Release.
	Version string `json:"-"`
	// Sections maps each workload with a section of its own, and
	// models.GlobalWorkload for the fallback section every other workload
	// receives, to the section's sha256.
	Sections map[string]string `json:"sections"`
	// Contents are the content models the sections use (for deletion).
	Contents []string `json:"contents"`
	// Bytes is the sections' total size, Largest the largest one's.
	Bytes   int `json:"bytes"`
	Largest int `json:"largest"`
	// TrainedAt is when the round that made it ran.
	TrainedAt time.Time `json:"trained_at"`
}

// SectionFor returns the section a workload receives: its own, else the
// fallback (workload "" and sha "" when the release has neither).
func (r *Release) SectionFor(workload string) (name, sha string) {
	if sha, ok := r.Sections[workload]; ok {
		return workload, sha
	}
	if sha, ok := r.Sections[models.GlobalWorkload]; ok {
		return models.GlobalWorkload, sha
	}
	return "", ""
}

// version is the release's address.
func (r *Release) version() string {
	names := make([]string, 0, len(r.Sections))
	for w := range r.Sections {
		names = append(names, w)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, w := range names {
		fmt.Fprintf(h, "%s %s\n", w, r.Sections[w])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) sectionKey(workload, sha string) string { return s.tag(workload, "section", sha) }
func (s *Store) contentKey(sha string) string           { return s.cfg.Prefix + ":content:" + sha }
func (s *Store) releaseKey(version string) string       { return s.cfg.Prefix + ":model:" + version }
func (s *Store) historyKey() string                     { return s.cfg.Prefix + ":models" }

// ReleaseWriter stores the sections of one release, then the release.
type ReleaseWriter struct {
	s        *Store
	r        Release
	contents map[string]bool
}

// NewRelease starts a release trained at trainedAt.
func (s *Store) NewRelease(trainedAt time.Time) *ReleaseWriter {
	return &ReleaseWriter{s: s, r: Release{Sections: map[string]string{}, TrainedAt: trainedAt.UTC()}, contents: map[string]bool{}}
}

// Put stores an encoded section (checked by decoding it) as the one its
// workload receives in this release, and returns whose it is and its
// sha256.
func (w *ReleaseWriter) Put(ctx context.Context, encoded []byte) (workload, sha string, err error) {
	m, err := models.DecodeSection(encoded)
	if err != nil {
		return "", "", fmt.Errorf("refusing to store an invalid section: %w", err)
	}
	rest, content, err := models.SplitSection(encoded)
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(content)
	csha := hex.EncodeToString(sum[:])
	workload, sha = m.SectionFor, m.SHA256()
	pipe := w.s.rdb.Pipeline()
	if !w.contents[csha] {
		pipe.SetNX(ctx, w.s.contentKey(csha), content, 0)
	}
	pipe.Set(ctx, w.s.sectionKey(workload, sha), append([]byte(csha), rest...), 0)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", "", err
	}
	w.record(workload, sha, csha, len(encoded))
	return workload, sha, nil
}

// Keep carries a stored section into this release (a workload whose new
// section was refused keeps the one in force).
func (w *ReleaseWriter) Keep(ctx context.Context, workload, sha string) error {
	key := w.s.sectionKey(workload, sha)
	pipe := w.s.rdb.Pipeline()
	head := pipe.GetRange(ctx, key, 0, sha256.Size*2-1)
	size := pipe.StrLen(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("section %.12s of %s: %w", sha, workload, err)
	}
	if len(head.Val()) != sha256.Size*2 {
		return fmt.Errorf("section %.12s of %s: %w", sha, workload, ErrNotFound)
	}
	csha := head.Val()
	clen, err := w.s.rdb.StrLen(ctx, w.s.contentKey(csha)).Result()
	if err != nil {
		return err
	}
	w.record(workload, sha, csha, int(size.Val())-len(csha)+int(clen))
	return nil
}

func (w *ReleaseWriter) record(workload, sha, csha string, size int) {
	if old, ok := w.r.Sections[workload]; ok && old == sha {
		return
	}
	w.r.Sections[workload] = sha
	if !w.contents[csha] {
		w.contents[csha] = true
		w.r.Contents = append(w.r.Contents, csha)
	}
	w.r.Bytes += size
	w.r.Largest = max(w.r.Largest, size)
}

// Len is the number of sections put or kept so far.
func (w *ReleaseWriter) Len() int { return len(w.r.Sections) }

// Commit stores the release, records it in the history (deleting the
// versions, sections and content models that fall off its end, unless in
// force or under watch), and returns its version.
func (w *ReleaseWriter) Commit(ctx context.Context) (string, error) {
	if len(w.r.Sections) == 0 {
		return "", errors.New("a release needs at least one section")
	}
	sort.Strings(w.r.Contents)
	return w.s.putRelease(ctx, &w.r)
}

func (s *Store) putRelease(ctx context.Context, r *Release) (string, error) {
	r.Version = r.version()
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	if err := s.rdb.Set(ctx, s.releaseKey(r.Version), b, 0).Err(); err != nil {
		return "", err
	}
	pipe := s.rdb.TxPipeline()
	pipe.LRem(ctx, s.historyKey(), 0, r.Version)
	pipe.LPush(ctx, s.historyKey(), r.Version)
	old := pipe.LRange(ctx, s.historyKey(), s.cfg.MaxModels, -1)
	pipe.LTrim(ctx, s.historyKey(), 0, s.cfg.MaxModels-1)
	kept := pipe.LRange(ctx, s.historyKey(), 0, s.cfg.MaxModels-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", err
	}
	if len(old.Val()) > 0 {
		if err := s.forget(ctx, old.Val(), kept.Val()); err != nil {
			return "", fmt.Errorf("release %.12s stored; deleting the versions off the history: %w", r.Version, err)
		}
	}
	return r.Version, nil
}

// forget deletes dropped releases, and their sections and content models
// that no kept release (nor the one in force, nor the canary) uses. A
// dropped release still in use stays, at the end of the history.
func (s *Store) forget(ctx context.Context, dropped, kept []string) error {
	inUse := map[string]bool{}
	for _, v := range kept {
		inUse[v] = true
	}
	if cur, err := s.Current(ctx); err == nil && cur != "" {
		inUse[cur] = true
	}
	if c, err := s.Canary(ctx); err == nil && c != nil {
		inUse[c.SHA256] = true
	}
	liveSections, liveContents := map[string]bool{}, map[string]bool{}
	for v := range inUse {
		r, err := s.Release(ctx, v)
		if err != nil {
			return err
		}
		for w, sha := range r.Sections {
			liveSections[w+" "+sha] = true
		}
		for _, c := range r.Contents {
			liveContents[c] = true
		}
	}
	for _, v := range dropped {
		if inUse[v] {
			// In force (or the canary) still: back at the end of the
			// history, to be looked at again when it falls off next.
			if err := s.rdb.RPush(ctx, s.historyKey(), v).Err(); err != nil {
				return err
			}
			continue
		}
		r, err := s.Release(ctx, v)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		pipe := s.rdb.Pipeline()
		for w, sha := range r.Sections {
			if !liveSections[w+" "+sha] {
				pipe.Del(ctx, s.sectionKey(w, sha))
			}
		}
		for _, c := range r.Contents {
			if !liveContents[c] {
				pipe.Del(ctx, s.contentKey(c))
			}
		}
		pipe.Del(ctx, s.releaseKey(v))
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Release reads a stored release.
func (s *Store) Release(ctx context.Context, version string) (*Release, error) {
	b, err := s.rdb.Get(ctx, s.releaseKey(version)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("model %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	r := &Release{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("stored release %.12s: %w", version, err)
	}
	r.Version = version
	return r, nil
}

// Models lists the stored versions, newest first.
func (s *Store) Models(ctx context.Context) ([]string, error) {
	return s.rdb.LRange(ctx, s.historyKey(), 0, -1).Result()
}

// Section returns a stored section, checked.
func (s *Store) Section(ctx context.Context, workload, sha string) ([]byte, error) {
	out, err := s.SectionsOf(ctx, map[string]string{workload: sha})
	if err != nil {
		return nil, err
	}
	return out[workload], nil
}

// SectionsOf returns the sections wanted (workload → sha256), checked, in
// one pipeline (and one more for the content models not read lately).
func (s *Store) SectionsOf(ctx context.Context, want map[string]string) (map[string][]byte, error) {
	pipe := s.rdb.Pipeline()
	cmds := make(map[string]*redis.StringCmd, len(want))
	for w, sha := range want {
		cmds[w] = pipe.Get(ctx, s.sectionKey(w, sha))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	rests := make(map[string]string, len(want))
	var need []string
	for w, c := range cmds {
		v, err := c.Result()
		if errors.Is(err, redis.Nil) || err == nil && len(v) < sha256.Size*2 {
			return nil, fmt.Errorf("section %.12s of %s: %w", want[w], w, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		rests[w] = v
		if csha := v[:sha256.Size*2]; s.contents.get(csha) == nil && !contains(need, csha) {
			need = append(need, csha)
		}
	}
	if len(need) > 0 {
		pipe := s.rdb.Pipeline()
		ccmds := make([]*redis.StringCmd, len(need))
		for i, c := range need {
			ccmds[i] = pipe.Get(ctx, s.contentKey(c))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, c := range ccmds {
			b, err := c.Bytes()
			if errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("content model %.12s: %w", need[i], ErrNotFound)
			}
			if err != nil {
				return nil, err
			}
			s.contents.put(need[i], b)
		}
	}
	out := make(map[string][]byte, len(want))
	for w, v := range rests {
		b, err := models.JoinSection([]byte(v[sha256.Size*2:]), s.contents.get(v[:sha256.Size*2]))
		if err != nil {
			return nil, fmt.Errorf("stored section %.12s of %s: %w", want[w], w, err)
		}
		if m, err := models.DecodeSection(b); err != nil || m.SHA256() != want[w] || m.SectionFor != w {
			return nil, fmt.Errorf("stored section %.12s of %s does not hold what its key says", want[w], w)
		}
		out[w] = b
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// contentCache keeps the content models read last: a release's sections
// share one, so reading them costs one read of it, not one per section.
type contentCache struct {
	mu   sync.Mutex
	keys []string
	vals map[string][]byte
}

const contentCacheSize = 4

func (c *contentCache) get(sha string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vals[sha]
}

func (c *contentCache) put(sha string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vals == nil {
		c.vals = map[string][]byte{}
	}
	if _, ok := c.vals[sha]; ok {
		return
	}
	if len(c.keys) == contentCacheSize {
		delete(c.vals, c.keys[0])
		c.keys = c.keys[1:]
	}
	c.keys = append(c.keys, sha)
	c.vals[sha] = b
}

// PutModel stores a whole model (models.Encode) as a release: the section
// of each of its workloads and its fallback section. The control plane's
// trainer writes sections as it makes them (NewRelease); this is for tools
// and tests.
func (s *Store) PutModel(ctx context.Context, encoded []byte) (string, error) {
	m, err := models.Decode(encoded)
	if err != nil {
		return "", fmt.Errorf("refusing to store an invalid model: %w", err)
	}
	if m.SectionFor != "" {
		return "", fmt.Errorf("refusing to store the section of %s as a model: store a whole model", m.SectionFor)
	}
	w := s.NewRelease(m.Meta.TrainedAt)
	names := make([]string, 0, len(m.Workloads)+1)
	for name := range m.Workloads {
		names = append(names, name)
	}
	if m.Workloads[models.GlobalWorkload] == nil {
		names = append(names, models.GlobalWorkload) // an empty fallback
	}
	sort.Strings(names)
	for _, name := range names {
		b, err := models.EncodeSection(m, name)
		if err != nil {
			return "", err
		}
		if _, _, err := w.Put(ctx, b); err != nil {
			return "", err
		}
	}
	return w.Commit(ctx)
}

// LoadModel assembles a release's sections into one whole model (for
// lateral-movement detection, tools and tests: the caller graph of every
// workload). Its memory grows with the mesh; serving never needs it.
func (s *Store) LoadModel(ctx context.Context, version string) (*models.Model, error) {
	r, err := s.Release(ctx, version)
	if err != nil {
		return nil, err
	}
	secs, err := s.SectionsOf(ctx, r.Sections)
	if err != nil {
		return nil, err
	}
	m := &models.Model{Workloads: map[string]*models.Workload{}}
	for _, name := range sortedNames(secs) {
		sec, err := models.DecodeSection(secs[name])
		if err != nil {
			return nil, err
		}
		m.Meta, m.Content = sec.Meta, sec.Content
		for n, w := range sec.Workloads {
			m.Workloads[n] = w
		}
	}
	m.Meta.TrainedAt = r.TrainedAt
	return m, nil
}

func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
