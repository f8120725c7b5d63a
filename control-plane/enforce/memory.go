package enforce

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/meshward/meshward/control-plane/decide"
)

// Memory is a sink that applies nothing: it keeps the standing decisions
// in memory, merged, promoted and expired as the other sinks keep theirs.
// A replay (meshward run) runs the loop into it and reports what stands.
type Memory struct {
	rules decide.Rules
	mu    sync.Mutex
	state map[string]decide.Decision
}

// NewMemory returns an empty memory sink.
func NewMemory(rules decide.Rules) *Memory {
	return &Memory{rules: rules, state: map[string]decide.Decision{}}
}

// Apply keeps a decision, merged with a standing one about the same
// principal (a suppressed decision is not kept).
func (m *Memory) Apply(_ context.Context, d decide.Decision) error {
	if d.Suppressed != "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, have := range m.state {
		if have.Principal == d.Principal {
			d = decide.Merge(have, d)
			break
		}
	}
	m.state[d.ID] = d
	return nil
}

// Tick promotes the dry runs that are due and forgets what expired.
func (m *Memory) Tick(_ context.Context, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, d := range m.state {
		if !now.Before(d.Expires) {
			delete(m.state, id)
		} else if at, ok := decide.Promotion(d, m.rules); ok && !now.Before(at) {
			d.Mode = decide.Enforce
			m.state[id] = d
		}
	}
	return nil
}

// Active is how many decisions stand.
func (m *Memory) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.state)
}

// Standing returns the standing decisions, by id.
func (m *Memory) Standing() []decide.Decision {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedDecisions(m.state)
}

// Holds says whether a decision stands.
func (m *Memory) Holds(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.state[id]
	return ok
}

// Release forgets a decision before it expires.
func (m *Memory) Release(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.state[id]; !ok {
		return fmt.Errorf("no such quarantine: %s", id)
	}
	delete(m.state, id)
	return nil
}
