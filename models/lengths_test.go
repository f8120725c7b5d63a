package models

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// lengthRequest is a form post with a token of one length (csrf), a page
// number of one or two digits, an order id of four, a date, and free text
// of spread lengths.
func lengthRequest(rng *rand.Rand) Request {
	words := []string{"red", "shoes", "garden", "lamp", "table", "winter", "coat", "blue", "small", "chair", "a", "delivered"}
	var text []string
	for n := 1 + rng.IntN(6); n > 0; n-- {
		text = append(text, words[rng.IntN(len(words))])
	}
	body := fmt.Sprintf("csrf=%016x%016x&page=%d&order=%d&day=2026-%02d-%02d&text=%s", rng.Uint64(), rng.Uint64(), 1+rng.IntN(60),
		1000+rng.IntN(9000), 1+rng.IntN(12), 1+rng.IntN(28), url.QueryEscape(strings.Join(text, " ")))
	return Request{Method: "POST", Path: "/post", Source: "s", Destination: "d", Body: []byte(body),
		Headers: []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}}
}

// A field closed in length (a token, a page number, a date) learns its
// lengths, and a value of a length it never had costs Good-Turing's chance
// of a new one, cut short or drawn out, of the same characters (which the
// spread of lengths alone forgives: a page of twenty digits is within
// Chebyshev's bound of a few nats): offline and through the loop, through
// the codec. A length next to one seen is not new (an order id gaining a
// digit), and free text, whose values keep bringing new lengths, is not
// judged so.
func TestLengthsCloseAField(t *testing.T) {
	for _, shaped := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(11, 12))
		var m *Model
		if shaped {
			m = trainOnRecords(t, 3000, func(int) Request { return lengthRequest(rng) })
		} else {
			tr, err := NewTrainer(DefaultTrainConfig())
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3000; i++ {
				r := lengthRequest(rng)
				tr.Observe(&r)
			}
			m = throughCodec(t, tr)
		}
		w := m.Workload("d")
		for name, closed := range map[string]bool{"csrf": true, "page": true, "order": true, "day": true, "text": false} {
			if p := paramNamed(w, name); p == nil || (p.newLength > 0) != closed {
				t.Fatalf("shaped %v: %s closed in length %v, want %v (%+v)", shaped, name, p != nil && p.newLength > 0, closed, p)
			}
		}
		post := func(body string) Verdict {
			r := Request{Method: "POST", Path: "/post", Source: "s", Destination: "d", Body: []byte(body),
				Headers: []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}}
			return w.Score(&r)
		}
		normal := "csrf=9f3a0c7e41b2d856e0c4a7f19b3d2e68&page=7&order=4711&day=2026-03-14&text=red+shoes"
		if v := post(normal); v.Score > m.Meta.Threshold {
			t.Errorf("shaped %v: a normal post %.3f %v", shaped, v.Score, v.ReasonList())
		}
		// A token cut short, of the same characters: its length alone
		// tells it, and without the length's novelty it passes.
		cut := strings.Replace(normal, "9f3a0c7e41b2d856e0c4a7f19b3d2e68", "90318274650318274651", 1)
		if v := post(cut); v.Score <= m.Meta.Threshold || !hasReason(v, ReasonValueLength) {
			t.Errorf("shaped %v: a token cut short scores %.3f %v (threshold %.3f)", shaped, v.Score, v.ReasonList(), m.Meta.Threshold)
		}
		csrf := paramNamed(w, "csrf")
		saved := csrf.newLength
		csrf.newLength = 0
		if v := post(cut); v.Score > m.Meta.Threshold {
			t.Errorf("shaped %v: without the length's novelty a token cut short already scores %.3f %v", shaped, v.Score, v.ReasonList())
		}
		csrf.newLength = saved
		// A page drawn out, a date reshaped: a new value where the field is
		// enumerated, a new length where it is not.
		for _, tampered := range []string{
			strings.Replace(normal, "page=7", "page=12509344501619944796", 1),
			strings.Replace(normal, "day=2026-03-14", "day=26-3-14", 1),
		} {
			if v := post(tampered); v.Score <= m.Meta.Threshold || !hasReason(v, ReasonValueLength) && !hasReason(v, ReasonNewValue) {
				t.Errorf("shaped %v: %q scores %.3f %v (threshold %.3f)", shaped, tampered, v.Score, v.ReasonList(), m.Meta.Threshold)
			}
		}
		// An order id past 9999 (through the loop, a shape one digit
		// longer than the field's: see ParamModel.nearShape), and free
		// text of a length never seen within its spread, pay nothing.
		for _, grown := range []string{
			strings.Replace(normal, "order=4711", "order=10001", 1),
			strings.Replace(normal, "text=red+shoes", "text=delivered+delivered+delivered+delivered+delivered", 1),
		} {
			if v := post(grown); hasReason(v, ReasonValueLength) || v.Score > m.Meta.Threshold {
				t.Errorf("shaped %v: %q scores %.3f %v", shaped, grown, v.Score, v.ReasonList())
			}
		}
	}
}

// A model whose lengths contradict its counts (more lengths seen once than
// lengths seen, or values without a length) is refused, with the
// parameter named.
func TestDecodeRefusesLengths(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	m := trainOnRecords(t, 400, func(int) Request { return lengthRequest(rng) })
	p := paramNamed(m.Workload("d"), "page")
	for _, bad := range []struct {
		lengths uint64
		once    uint32
	}{{p.Lengths, 3}, {0, 0}} {
		saved := *p
		p.Lengths, p.LenSingletons = bad.lengths, bad.once
		b, err := Encode(m)
		*p = saved
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "param page") {
			t.Errorf("lengths %b, %d seen once: %v", bad.lengths, bad.once, err)
		}
	}
}
