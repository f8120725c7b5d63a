package enforcement

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"/users/*", "/users/{num}", true},
		{"/users/*", "/orders/{num}", false},
		{"spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/web", true},
		{"*/orders", "/a/b/orders", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"exact", "exact", true},
		{"exact", "exactly", false},
	} {
		if got := Match(c.p, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

// TestRuleRefusalNamesTheField: every bad field is reported, each wrapping
// its sentinel and starting with its name.
func TestRuleRefusalNamesTheField(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	bad := Rule{ID: "Bad ID", Workload: "a b", Caller: "*", Method: "get", Route: "users", Shape: "xyz",
		ReasonCode: "nonsense", Expires: now.Add(-time.Hour)}
	err := bad.Validate(now)
	if err == nil {
		t.Fatal("a bad rule was accepted")
	}
	for _, want := range []error{ErrID, ErrWorkload, ErrCaller, ErrMethod, ErrRoute, ErrShape, ErrReasonCode, ErrExpires} {
		if !errors.Is(err, want) {
			t.Errorf("%v not reported in %v", want, err)
		}
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		field, _, _ := strings.Cut(line, ":")
		if strings.ContainsAny(field, " ") {
			t.Errorf("%q does not start with the field's name", line)
		}
	}
	if err := (&Rule{ID: "x", Workload: Mesh, Expires: now.Add(time.Hour)}).Validate(now); !errors.Is(err, ErrNothing) {
		t.Errorf("a rule naming nothing: %v, want ErrNothing", err)
	}
	if err := (&Rule{ID: "x", Workload: Mesh, ReasonCode: "new_caller", Expires: now.Add(MaxLifetime + time.Hour)}).Validate(now); !errors.Is(err, ErrExpires) {
		t.Errorf("an expiry past MaxLifetime: %v", err)
	}
	good := Rule{ID: "ok-1", Workload: "reviews.shop", Caller: "spiffe://*/sa/web", Method: "GET", Route: "/reviews/*", Expires: now.Add(time.Hour)}
	if err := good.Validate(now); err != nil {
		t.Errorf("a good rule refused: %v", err)
	}
	// A filter keeps a rule past its expiry (clocks differ).
	good.Expires = now.Add(-time.Hour)
	if err := good.CheckForm(); err != nil {
		t.Errorf("CheckForm judged the expiry: %v", err)
	}
}

func TestParseDenyReasons(t *testing.T) {
	def, err := ParseDenyReasons([]string{"default"})
	if err != nil || def != models.DefaultDenyReasons() {
		t.Fatalf("default: %v %v", def, err)
	}
	for _, c := range []models.ReasonCode{models.ReasonNewCaller, models.ReasonNewRoute, models.ReasonNewEdge} {
		if def.Has(c) {
			t.Errorf("the default denies %s: structural novelty is the detector's", c)
		}
	}
	for _, c := range []models.ReasonCode{models.ReasonKeywords, models.ReasonValueShape} {
		if !def.Has(c) {
			t.Errorf("the default does not deny %s", c)
		}
	}
	none, err := ParseDenyReasons([]string{"none"})
	if err != nil || !none.Empty() {
		t.Errorf("none: %v %v", none, err)
	}
	s, err := ParseDenyReasons([]string{"new_caller", "size"})
	if err != nil || !s.Has(models.ReasonNewCaller) || !s.Has(models.ReasonRequestSize) || s.Has(models.ReasonKeywords) {
		t.Errorf("new_caller,size: %v %v", s, err)
	}
	_, err = ParseDenyReasons([]string{"bogus", "status"})
	if !errors.Is(err, ErrDenyReasons) || !strings.Contains(err.Error(), "deny_reasons[0]") || !strings.Contains(err.Error(), "deny_reasons[1]") {
		t.Errorf("bad names: %v", err)
	}
}

func TestRuleAppliesAndSets(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	edge := Rule{ID: "e", Workload: "reviews.shop", Caller: "spiffe://*/sa/web", Expires: now.Add(time.Hour)}
	ev := Evidence{Workload: "reviews.shop", Caller: "spiffe://cluster.local/ns/shop/sa/web", Method: "GET", Route: "/reviews/{num}"}
	if !edge.Applies(&ev, now) {
		t.Error("edge exception does not apply to its edge")
	}
	if edge.Applies(&ev, now.Add(time.Hour)) {
		t.Error("an exception applies at its expiry")
	}
	other := ev
	other.Workload = "ratings.shop"
	if edge.Applies(&other, now) {
		t.Error("a workload's exception applies to another workload")
	}
	if s := edge.Sets(); !s.Has(models.ReasonNewCaller) || s.Has(models.ReasonKeywords) {
		t.Errorf("an edge exception sets aside %v", s.Names())
	}
	param := Rule{ID: "p", Workload: Mesh, Param: "lang", Shape: "a*", Expires: now.Add(time.Hour)}
	if param.Applies(&ev, now) {
		t.Error("a param exception applies to a request without the param")
	}
	ev.Param, ev.Shape, ev.HaveParam = "lang", "aa", true
	if !param.Applies(&ev, now) {
		t.Error("a mesh-wide param exception does not apply")
	}
	if s := param.Sets(); !s.Has(models.ReasonValueShape) || !s.Has(models.ReasonContent) || s.Has(models.ReasonNewCaller) {
		t.Errorf("a param exception sets aside %v", s.Names())
	}
	if !param.Covers(&ev, models.ReasonValueShape, now) || param.Covers(&ev, models.ReasonNewRoute, now) {
		t.Error("Covers disagrees with Sets")
	}
}
