package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// formFixture trains on form posts of a route (q, n), and on JSON bodies
// and queries of others.
func formFixture(t testing.TB, padded bool) *Model {
	t.Helper()
	tr := newTestTrainer(t)
	g := rand.New(rand.NewPCG(7, 8))
	words := []string{"shoes", "boots", "red", "lamp", "garden", "coffee", "table", "desk"}
	form := []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}
	for i := 0; i < 3000; i++ {
		body := "q=" + words[g.IntN(len(words))] + "&n=" + fmt.Sprint(g.IntN(100))
		if padded {
			// The route's forms are long: hundreds of pairs.
			var b strings.Builder
			for k := 300 + g.IntN(500); k > 0; k-- {
				b.WriteString("q=" + words[g.IntN(len(words))] + "&")
			}
			body = b.String() + body
		}
		tr.Observe(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte(body), Source: "gw", Destination: "app"})
		tr.Observe(&Request{Method: "PUT", Path: "/items/" + fmt.Sprint(g.IntN(1000)), Headers: []Header{{Name: "content-type", Value: "application/json"}},
			Body: []byte(fmt.Sprintf(`{"name":%q,"qty":%d}`, words[g.IntN(len(words))], g.IntN(9))), Source: "gw", Destination: "app"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// streamed scores r with its body fed in the given chunk sizes (cycled).
func streamed(w *Workload, r Request, sizes []int) Verdict {
	var s Scratch
	var v Verdict
	body := r.Body
	r.Body = nil
	r.RequestBytes = int64(len(body))
	w.Begin(&r, &s, &v)
	for k := 0; len(body) > 0; k++ {
		n := min(len(body), sizes[k%len(sizes)])
		w.Feed(body[:n], &s)
		body = body[n:]
	}
	w.End(&r, &s, &v)
	return v
}

// TestChunksDoNotChangeTheVerdict: a body fed whole or in chunks of any
// size (an escape, a pair, a window split anywhere) gives the same verdict
// to the bit.
func TestChunksDoNotChangeTheVerdict(t *testing.T) {
	m := formFixture(t, false)
	w := m.Workload("app")
	g := rand.New(rand.NewPCG(9, 10))
	bodies := []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "q=shoes&n=4"},
		{"application/x-www-form-urlencoded", "q=1%27+OR+%271%27%3D%271&n=%4&x=%zz%2&&=&y"},
		{"application/x-www-form-urlencoded", strings.Repeat("q=shoes&", 700) + "q=1%27+OR+%271%27%3D%271%27+UNION+SELECT+username%2Cpassword+FROM+users--"},
		{"application/x-www-form-urlencoded", "q=" + strings.Repeat("a", 5000) + "%27%20or%201%3D1--&n=" + strings.Repeat("%41", 3000)},
		{"application/json", `{"name":"` + strings.Repeat("x", 3000) + `' OR 1=1 --","qty":1}%`},
		{"", "a=1&b=" + strings.Repeat("c", 2000)},
		{"", "plain text with spaces %3Cscript%3E"},
		{"multipart/form-data; boundary=x", "--x\r\n\r\na%27b\r\n--x--"},
	}
	for i, b := range bodies {
		r := Request{Method: "POST", Path: "/search", Body: []byte(b.body), Source: "gw", Destination: "app"}
		if b.ct != "" {
			r.Headers = []Header{{Name: "content-type", Value: b.ct}}
		}
		whole := streamed(w, r, []int{len(b.body)})
		for _, sizes := range [][]int{{1}, {2}, {3}, {7, 1, 1}, {1024}, {1023, 2}, {g.IntN(100) + 1, g.IntN(3000) + 1}} {
			if got := streamed(w, r, sizes); got != whole {
				t.Errorf("body %d in chunks of %v:\n got %+v\nwant %+v", i, sizes, got, whole)
			}
		}
		// And as replay and training read it: the whole body in memory.
		if got := w.Score(&r); got != whole {
			t.Errorf("body %d whole in memory:\n got %+v\nwant %+v", i, got, whole)
		}
	}
}

// TestPaddingDoesNotHideAPayload: the payload after 700 benign pairs
// scores as it does alone (within 0.05), and a padded benign body stays
// below the threshold where the route's bodies were that long.
func TestPaddingDoesNotHideAPayload(t *testing.T) {
	payload := "q=" + url.QueryEscape("1' OR '1'='1' UNION SELECT username,password FROM users--")
	form := []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}
	m := formFixture(t, false)
	w := m.Workload("app")
	alone := w.Score(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte(payload), Source: "gw", Destination: "app"})
	padded := w.Score(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte(strings.Repeat("q=shoes&", 700) + payload), Source: "gw", Destination: "app"})
	if alone.Score <= m.Meta.Threshold || math.Abs(alone.Score-padded.Score) > 0.05 {
		t.Errorf("the payload alone scores %.3f, padded %.3f: want both flagged, within 0.05\nalone %+v\npadded %+v", alone.Score, padded.Score, alone, padded)
	}
	m = formFixture(t, true)
	w = m.Workload("app")
	benign := w.Score(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte(strings.Repeat("q=shoes&", 700) + "q=lamp&n=3"), Source: "gw", Destination: "app"})
	if benign.Score > m.Meta.Threshold {
		t.Errorf("a padded benign body where bodies are that long: %+v", benign)
	}
	padded = w.Score(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte(strings.Repeat("q=shoes&", 700) + payload), Source: "gw", Destination: "app"})
	if padded.Score <= m.Meta.Threshold {
		t.Errorf("the padded payload where bodies are that long: %+v", padded)
	}
}

// TestLongValuesAreReadInWindows: a payload after thousands of benign
// bytes of one value is read, as the same value's start would be.
func TestLongValuesAreReadInWindows(t *testing.T) {
	m := formFixture(t, false)
	w := m.Workload("app")
	form := []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}
	inj := url.QueryEscape("' UNION SELECT password FROM users--")
	tail := w.Score(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte("q=" + strings.Repeat("shoes+", 2000) + inj), Source: "gw", Destination: "app"})
	if tail.Score <= m.Meta.Threshold || tail.Parts[PartContent] == 0 {
		t.Errorf("a payload after 12,000 bytes of one value: %+v", tail)
	}
	var s paramScratch
	s.extract(&Request{Method: "POST", Path: "/search", Headers: form, Body: []byte("q=" + strings.Repeat("b", 2500))})
	var windows []string
	for i := 0; i < s.n; i++ {
		if p := s.params[i]; string(p.name) == "q" {
			windows = append(windows, fmt.Sprintf("%d/%d/%v/%v", len(p.value), p.full, p.cont, p.last))
		}
	}
	second := 2*valueWindow - valueOverlap
	want := []string{"1024/1024/false/false", fmt.Sprintf("1024/%d/true/false", second), fmt.Sprintf("%d/2500/true/true", 2500-second+valueOverlap)}
	if strings.Join(windows, " ") != strings.Join(want, " ") {
		t.Errorf("windows %v, want %v", windows, want)
	}
}

// TestBodyLimit: what lies beyond the body limit is not read, and counts
// in the request's size only.
func TestBodyLimit(t *testing.T) {
	m := formFixture(t, false)
	w := m.Workload("app")
	s := Scratch{BodyLimit: 1024}
	var v Verdict
	r := Request{Method: "POST", Path: "/search", Headers: []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}, Source: "gw", Destination: "app"}
	w.Begin(&r, &s, &v)
	read := w.Feed([]byte(strings.Repeat("q=shoes&", 200)), &s) + w.Feed([]byte("q=%27+OR+1%3D1--"), &s)
	if read != 1024 {
		t.Errorf("read %d bytes of a body past a 1,024-byte limit", read)
	}
	r.RequestBytes = 1616
	w.End(&r, &s, &v)
	if v.Codes[PartValues] == ReasonKeywords || v.Parts[PartSize] == 0 {
		t.Errorf("the payload past the limit was read, or the size not judged: %+v", v)
	}
}
