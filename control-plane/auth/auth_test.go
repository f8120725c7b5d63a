package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// Unit checks of what needs no API server (the real TokenReview and
// SubjectAccessReview are tested in control-plane/server against a
// kube-apiserver).
func TestStaticToken(t *testing.T) {
	tok := strings.Repeat("s", 40)
	a, err := New(Config{Token: []byte(tok)})
	if err != nil {
		t.Fatal(err)
	}
	req := func(h string) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		return r
	}
	p, err := a.Authenticate(context.Background(), req("Bearer "+tok))
	if err != nil || p.User != AdminUser {
		t.Fatalf("the admin token: %+v %v", p, err)
	}
	if ok, _, err := a.Authorize(context.Background(), p, Attributes{Verb: "create", Resource: "quarantines", Subresource: "release", Name: "x"}); !ok || err != nil {
		t.Errorf("the admin may not release: %v", err)
	}
	for _, h := range []string{"", "Bearer", "Bearer " + tok[:39], "Basic " + tok, "bearer " + tok, "Bearer " + tok + "x"} {
		if _, err := a.Authenticate(context.Background(), req(h)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%q: %v", h, err)
		}
	}
	// Without an API server, nobody but the admin is authorized.
	if ok, _, _ := a.Authorize(context.Background(), &Principal{User: "someone"}, Attributes{Verb: "get", Path: "/metrics"}); ok {
		t.Error("a principal the admin token does not name was authorized")
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"nothing":       {Config{}, "-admin-token-file"},
		"a short token": {Config{Token: []byte("short")}, "at least 32"},
		"white space":   {Config{Token: []byte(strings.Repeat("a", 20) + " " + strings.Repeat("b", 20))}, "white space"},
	} {
		if _, err := New(c.cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestAttributesString(t *testing.T) {
	for a, want := range map[Attributes]string{
		{Verb: "create", Resource: "quarantines", Subresource: "release", Name: "q-1"}: "create quarantines/release q-1",
		{Verb: "list", Resource: "models"}:                                             "list models",
		{Verb: "get", Path: "/metrics"}:                                                "get /metrics",
	} {
		if got := a.String(); got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
