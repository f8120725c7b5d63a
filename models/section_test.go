package models

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestSectionRoundTrip: each workload's section decodes on its own, holds
// that workload's part only, scores its requests exactly as the whole model
// does, and re-encodes to the same bytes (its sha256 is its version).
func TestSectionRoundTrip(t *testing.T) {
	m := trainFixture(t, 1, nil)
	reqs := fixtureRequests()
	for name := range m.Workloads {
		if name == GlobalWorkload {
			continue
		}
		b, err := EncodeSection(m, name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := DecodeSection(b)
		if err != nil {
			t.Fatalf("section of %s: %v", name, err)
		}
		if s.SectionFor != name || len(s.Workloads) != 1 || s.Workloads[name] == nil || s.Size() != len(b) {
			t.Fatalf("section of %s: for %q, %d parts, %d bytes", name, s.SectionFor, len(s.Workloads), s.Size())
		}
		if s.Meta.Threshold != m.Meta.Threshold || s.Meta.TargetFPR != m.Meta.TargetFPR || s.Meta.Seed != m.Meta.Seed {
			t.Errorf("section of %s: meta %+v, model %+v", name, s.Meta, m.Meta)
		}
		if again, err := Encode(s); err != nil || !bytes.Equal(again, b) || s.SHA256() != sectionSHA(b) {
			t.Errorf("section of %s re-encoded differently (%v)", name, err)
		}
		for i := range reqs {
			if r := &reqs[i]; r.Destination == name {
				if a, b := m.Score(r), s.Score(r); a != b {
					t.Fatalf("section of %s scores %+v as %+v, the whole model as %+v", name, r, b, a)
				}
			}
		}
	}
	// A workload without a part of its own gets the fallback section, which
	// scores as the whole model does for it.
	b, err := EncodeSection(m, "stranger.shop")
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecodeSection(b)
	if err != nil || s.SectionFor != GlobalWorkload || s.Workloads[GlobalWorkload] == nil || len(s.Workloads) != 1 {
		t.Fatalf("fallback section: %v, %+v", err, s)
	}
	r := Request{Method: "GET", Path: "/items/3", Source: "spiffe://cluster.local/ns/shop/sa/caller-1", Destination: "stranger.shop"}
	if a, b := m.Score(&r), s.Score(&r); a != b || !a.Scored {
		t.Errorf("fallback section scores %+v, the whole model %+v", b, a)
	}
	if other, _ := EncodeSection(m, "another-stranger.shop"); !bytes.Equal(other, b) {
		t.Error("two workloads without a part got different fallback sections")
	}
}

// TestSectionIsIndependentOfOtherWorkloads: a section's bytes depend on its
// workload's part and the shared content model only, so a change elsewhere
// leaves its version as it was.
func TestSectionIsIndependentOfOtherWorkloads(t *testing.T) {
	m := trainFixture(t, 1, nil)
	a1, _ := EncodeSection(m, "svc-0.shop")
	b1, _ := EncodeSection(m, "svc-1.shop")
	w := *m.Workloads["svc-1.shop"]
	w.Routes = append([]Route(nil), w.Routes...)
	w.Routes[0].Count++
	m.Workloads["svc-1.shop"] = &w
	m.Meta.TrainedAt = m.Meta.TrainedAt.Add(1)
	m.Meta.Samples++
	a2, _ := EncodeSection(m, "svc-0.shop")
	b2, _ := EncodeSection(m, "svc-1.shop")
	if !bytes.Equal(a1, a2) {
		t.Error("changing another workload's part (and the round's time and counts) changed this section")
	}
	if bytes.Equal(b1, b2) {
		t.Error("changing the workload's own part left its section as it was")
	}
	c := *m.Content
	c.Spread *= 2
	m.Content = &c
	if a3, _ := EncodeSection(m, "svc-0.shop"); bytes.Equal(a1, a3) {
		t.Error("changing the shared content model left the section as it was")
	}
}

// TestDecodeSectionRefuses: a filter's decoder refuses a whole-mesh model
// (before reading it), a section whose record is another workload's, and
// every truncation and corruption of a section.
func TestDecodeSectionRefuses(t *testing.T) {
	m := trainFixture(t, 1, nil)
	mesh, _ := Encode(m)
	if _, err := DecodeSection(mesh); !errors.Is(err, ErrNotSection) || !strings.Contains(err.Error(), "meshward model config -workload") {
		t.Errorf("a whole model given as a section: %v", err)
	}
	if d, err := Decode(mesh); err != nil || d.SectionFor != "" || len(d.Workloads) != len(m.Workloads) {
		t.Errorf("Decode of the whole model: %v", err)
	}
	b, _ := EncodeSection(m, "svc-2.shop")
	for n := 0; n < len(b); n++ {
		if _, err := DecodeSection(b[:n]); !errors.Is(err, ErrModelFormat) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	for i := 0; i < len(b); i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x5a
		if _, err := DecodeSection(c); err == nil {
			t.Fatalf("corruption at byte %d accepted", i)
		}
	}
	// A well-sealed section whose "for" names another workload than its
	// record's (same length, so only that string differs).
	forged := append([]byte(nil), b[headerSize:]...)
	i := bytes.Index(forged, []byte("svc-2.shop"))
	copy(forged[i:], "svc-3.shop")
	sealed, err := seal(kindSection, forged, MaxSectionBytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeSection(sealed); err == nil || !strings.Contains(err.Error(), `the section for "svc-3.shop" holds the record of "svc-2.shop"`) {
		t.Errorf("a section holding another workload's record: %v", err)
	}
	// Over the section limit: refused from the header.
	big := append(append([]byte(nil), b[:headerSize]...), make([]byte, MaxSectionBytes)...)
	if _, err := DecodeSection(big); !errors.Is(err, ErrModelTooLarge) {
		t.Errorf("oversize section: %v", err)
	}
}

// TestOlderVersionsAreRefused: a model of codec version 6 (the whole-mesh
// models filters took before sections) is refused with a message that says
// what to do.
func TestOlderVersionsAreRefused(t *testing.T) {
	b, _ := EncodeSection(trainFixture(t, 1, nil), "svc-0.shop")
	old := append([]byte(nil), b...)
	binary.LittleEndian.PutUint16(old[4:], 6)
	binary.LittleEndian.PutUint16(old[6:], 0)
	for _, dec := range []func([]byte) (*Model, error){Decode, DecodeSection} {
		_, err := dec(old)
		if !errors.Is(err, ErrModelFormat) || !strings.Contains(err.Error(), fmt.Sprintf("codec version 6, this build reads version %d", CodecVersion)) || !strings.Contains(err.Error(), "retrain") {
			t.Errorf("a version 6 model: %v", err)
		}
	}
}

// TestSplitSection: the content model splits off a section and joins back
// to the same bytes; a join with another model's content is refused.
func TestSplitSection(t *testing.T) {
	m := trainFixture(t, 1, nil)
	b, _ := EncodeSection(m, "svc-1.shop")
	rest, content, err := SplitSection(b)
	if err != nil {
		t.Fatal(err)
	}
	b0, _ := EncodeSection(m, "svc-0.shop")
	_, content0, _ := SplitSection(b0)
	if !bytes.Equal(content, content0) || len(content) < 100 {
		t.Errorf("two sections of one model carry different content encodings (%d, %d bytes)", len(content), len(content0))
	}
	joined, err := JoinSection(rest, content)
	if err != nil || !bytes.Equal(joined, b) {
		t.Fatalf("join: %v", err)
	}
	other, _ := EncodeSection(trainFixture(t, 2, nil), "svc-1.shop")
	_, otherContent, _ := SplitSection(other)
	if _, err := JoinSection(rest, otherContent); err == nil {
		t.Error("a section joined with another model's content model was accepted")
	}
	if _, _, err := SplitSection(mustEncode(t, m)); !errors.Is(err, ErrNotSection) {
		t.Errorf("splitting a whole model: %v", err)
	}
}

func sectionSHA(b []byte) string {
	m, err := DecodeSection(b)
	if err != nil {
		return ""
	}
	return m.SHA256()
}

func mustEncode(t *testing.T, m *Model) []byte {
	t.Helper()
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
