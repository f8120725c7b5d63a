package plugin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models/record"
)

// enforceConfig is an enforce configuration with the given deny_reasons
// (nil: the default) and exceptions, shipping every record.
func enforceConfig(t testing.TB, model []byte, mode pluginconfig.Mode, deny []string, rules ...enforcement.Rule) []byte {
	t.Helper()
	one := 1.0
	c := pluginconfig.Config{Mode: mode, Workload: workload, CollectorCluster: "meshward-collector", SampleRate: &one,
		DenyReasons: deny, Exceptions: rules}
	c.WithModel(model)
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Requests of the graduated tests: a known route from a caller the section
// never saw, a route it never served, and a SQL injection in a parameter
// it knows.
var (
	plainGet  = get("/reviews/1")
	newRoute  = get("/admin/export")
	injection = get("/reviews/31?lang=en%27%20union%20select%20password%20from%20users--")
)

// send sends one request and reports whether the filter denied it, with
// the 403's x-meshward-denied.
func send(t *testing.T, host proxytest.HostEmulator, hs [][2]string) (bool, string) {
	t.Helper()
	action, id := request(host, hs)
	resp := host.GetSentLocalResponse(id)
	host.CompleteHttpContext(id)
	if (action == types.ActionPause) != (resp != nil) {
		t.Fatalf("%v: action %v with local response %v", hs, action, resp)
	}
	if resp == nil {
		return false, ""
	}
	if resp.StatusCode != 403 {
		t.Errorf("status %d, want 403", resp.StatusCode)
	}
	reason, _ := header(resp.Headers, headerDenied)
	return true, reason
}

// TestEnforceIsGraduated: enforce denies what the request itself shows
// (content and values), from a known caller or a new one, and lets
// structural novelty alone through — flagged and counted, for the
// detector; deny_reasons makes the choice explicit either way.
func TestEnforceIsGraduated(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		t.Run("default", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil), props: peer(attacker)})
			for _, hs := range [][][2]string{plainGet, newRoute} {
				if denied, why := send(t, host, hs); denied {
					t.Errorf("%s from a new caller: denied for %s; structural novelty is the detector's", hs[1][1], why)
				}
			}
			if n := counter(t, host, MetricFlagged); n != 2 {
				t.Errorf("flagged = %d, want 2: let through, not unseen", n)
			}
			denied, why := send(t, host, injection)
			if !denied {
				t.Fatal("an injection from a new caller was let through")
			}
			if !isContentOrValue(why) {
				t.Errorf("denied for %q, want a content or value reason", why)
			}
			if n := counter(t, host, MetricDenied); n != 1 {
				t.Errorf("denied = %d, want 1", n)
			}
		})
		t.Run("known caller", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil), props: peer(frontend)})
			if denied, why := send(t, host, injection); !denied || !isContentOrValue(why) {
				t.Errorf("an injection from a known caller: denied %v for %q", denied, why)
			}
		})
		t.Run("structure denied too", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, []string{"default", "structure"}), props: peer(attacker)})
			if denied, why := send(t, host, plainGet); !denied || why != "new_caller" {
				t.Errorf("with structure in deny_reasons, a new caller: denied %v for %q, want new_caller", denied, why)
			}
		})
		t.Run("nothing denied", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, []string{"none"}), props: peer(attacker)})
			if denied, why := send(t, host, injection); denied {
				t.Errorf("deny_reasons [none] denied for %q", why)
			}
			if n := counter(t, host, MetricFlagged); n != 1 {
				t.Errorf("flagged = %d, want 1", n)
			}
		})
	})
}

func isContentOrValue(reason string) bool {
	switch reason {
	case "value_shape", "value_length", "keywords", "new_value", "request_size":
		return true
	}
	return strings.HasPrefix(reason, "content")
}

// TestExceptionsApplyBeforeDenying: an exception for the parameter lets the
// injection through (and the record says which exception and what it
// would have been denied for); one past its expiry is ignored on the
// filter's own clock; one for the caller alone sets aside the structural
// reasons only, never the content; a mesh-wide reason exception applies.
func TestExceptionsApplyBeforeDenying(t *testing.T) {
	model := fixtureModel(t)
	soon := time.Now().Add(time.Hour)
	forEachEnv(t, func(t *testing.T, e env) {
		t.Run("parameter", func(t *testing.T) {
			rule := enforcement.Rule{ID: "lang-ok", Workload: workload, Route: "/reviews/{num}", Param: "lang", Expires: soon}
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil, rule), props: peer(frontend)})
			if denied, why := send(t, host, injection); denied {
				t.Fatalf("denied for %s despite the exception for lang", why)
			}
			rec := shippedRecord(t, host)
			if rec.WouldDeny == "" || rec.Deny != "" || len(rec.Excepted) != 1 || rec.Excepted[0] != "lang-ok" || rec.DenyParam != "lang" {
				t.Errorf("record: deny %q would_deny %q excepted %v param %q", rec.Deny, rec.WouldDeny, rec.Excepted, rec.DenyParam)
			}
		})
		t.Run("another parameter", func(t *testing.T) {
			// lang is excepted; the injection rides in another parameter.
			rule := enforcement.Rule{ID: "lang-ok", Workload: workload, Route: "/reviews/{num}", Param: "lang", Expires: soon}
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil, rule), props: peer(frontend)})
			if denied, _ := send(t, host, get("/reviews/31?lang=en&sort=%27%20union%20select%20password%20from%20users--")); !denied {
				t.Error("an exception for lang let an injection in another parameter through")
			}
		})
		t.Run("another route", func(t *testing.T) {
			rule := enforcement.Rule{ID: "lang-ok", Workload: workload, Route: "/other/{num}", Param: "lang", Expires: soon}
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil, rule), props: peer(frontend)})
			if denied, _ := send(t, host, injection); !denied {
				t.Error("an exception for another route let the injection through")
			}
		})
		t.Run("expired", func(t *testing.T) {
			// Long past on any clock: the SDK's wazero host runs a fake one
			// (from 2022).
			rule := enforcement.Rule{ID: "lang-ok", Workload: enforcement.Mesh, Param: "lang", Expires: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil, rule), props: peer(frontend)})
			if denied, _ := send(t, host, injection); !denied {
				t.Error("an expired exception let the injection through")
			}
		})
		t.Run("an edge is not a licence", func(t *testing.T) {
			// The caller's edge is fine; its injections are not.
			rule := enforcement.Rule{ID: "attacker-edge", Workload: workload, Caller: attacker, Expires: soon}
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, []string{"default", "structure"}, rule), props: peer(attacker)})
			if denied, why := send(t, host, plainGet); denied {
				t.Errorf("the excepted edge was denied for %s", why)
			}
			if denied, why := send(t, host, injection); !denied || !isContentOrValue(why) {
				t.Errorf("an injection on an excepted edge: denied %v for %q", denied, why)
			}
		})
		t.Run("mesh-wide reason", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeEnforce, nil), props: peer(frontend)})
			_, why := send(t, host, injection)
			if why == "" {
				t.Fatal("the injection was not denied")
			}
			// The exception arrives as a configuration update (the next
			// xDS push): one emulated proxy at a time.
			rule := enforcement.Rule{ID: "reason-ok", Workload: enforcement.Mesh, Route: "/reviews/*", ReasonCode: why, Expires: soon}
			setPluginConfig(t, host, enforceConfig(t, model, pluginconfig.ModeEnforce, nil, rule))
			if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
				t.Fatalf("the update with the exception was refused: %v", host.GetCriticalLogs())
			}
			denied, again := send(t, host, injection)
			if denied && again == why {
				t.Errorf("denied for %s again despite the exception for it", why)
			}
		})
	})
}

// TestMonitorRecordsWhatEnforceWouldDeny: monitor lets everything through,
// and the record of a request enforce would deny says so, with its
// reasons and the parameter behind them.
func TestMonitorRecordsWhatEnforceWouldDeny(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: enforceConfig(t, model, pluginconfig.ModeMonitor, nil), props: peer(frontend)})
		if denied, _ := send(t, host, injection); denied {
			t.Fatal("monitor denied")
		}
		rec := shippedRecord(t, host)
		if !isContentOrValue(rec.Deny) || rec.Enforced || len(rec.Reasons) == 0 {
			t.Errorf("record: deny %q enforced %v reasons %v", rec.Deny, rec.Enforced, rec.Reasons)
		}
		if n := counter(t, host, MetricDenied); n != 0 {
			t.Errorf("denied = %d in monitor", n)
		}
	})
}

// TestBadPolicyIsRefused: bad deny_reasons and exceptions are refused, each
// naming its field, and the last good configuration stays.
func TestBadPolicyIsRefused(t *testing.T) {
	model := fixtureModel(t)
	soon := time.Now().Add(time.Hour)
	cases := []struct {
		name  string
		deny  []string
		rules []enforcement.Rule
		want  string
	}{
		{"unknown reason", []string{"sql"}, nil, `deny_reasons[0]: "sql" is neither a reason`},
		{"response reason", []string{"status"}, nil, "deny_reasons[0]: status is known only once the response is"},
		{"another workload", nil, []enforcement.Rule{{ID: "a", Workload: "ratings.shop", Param: "q", Expires: soon}}, `exceptions[0]: workload: "ratings.shop", this filter serves "reviews.shop"`},
		{"bad shape", nil, []enforcement.Rule{{ID: "a", Workload: workload, Param: "q", Shape: "abc", Expires: soon}}, "exceptions[0]: shape:"},
		{"bad route", nil, []enforcement.Rule{{ID: "a", Workload: workload, Route: "reviews", Expires: soon}}, "exceptions[0]: route:"},
		{"bad reason code", nil, []enforcement.Rule{{ID: "a", Workload: workload, ReasonCode: "sql", Expires: soon}}, "exceptions[0]: reason_code:"},
		{"no expiry", nil, []enforcement.Rule{{ID: "a", Workload: workload, Param: "q"}}, "exceptions[0]: expires: required"},
		{"says nothing", nil, []enforcement.Rule{{ID: "a", Workload: workload, Expires: soon}}, "exceptions[0]: an exception must name"},
		{"twice", nil, []enforcement.Rule{{ID: "a", Workload: workload, Param: "q", Expires: soon}, {ID: "a", Workload: workload, Param: "r", Expires: soon}}, `exceptions[1]: id: "a" is given twice`},
	}
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: strictConfig(t, model), props: peer(attacker)})
		for _, c := range cases {
			setPluginConfig(t, host, enforceConfig(t, model, pluginconfig.ModeEnforce, c.deny, c.rules...))
			if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
				t.Fatalf("%s: accepted", c.name)
			}
			logs := host.GetCriticalLogs()
			if last := logs[len(logs)-1]; !strings.Contains(last, c.want) {
				t.Errorf("%s: log %q does not say %q", c.name, last, c.want)
			}
			// The strict configuration is still in force.
			if denied, _ := send(t, host, plainGet); !denied {
				t.Errorf("%s: after the refusal a new caller was let through", c.name)
			}
		}
	})
}

// shippedRecord ticks, and returns the last record the filter shipped.
func shippedRecord(t *testing.T, host proxytest.HostEmulator) record.Record {
	t.Helper()
	host.Tick()
	calls := host.GetCalloutAttributesFromContext(1)
	if len(calls) == 0 {
		t.Fatal("nothing shipped")
	}
	lines := strings.Split(strings.TrimSpace(string(calls[len(calls)-1].Body)), "\n")
	var rec record.Record
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
		t.Fatalf("record %q: %v", lines[len(lines)-1], err)
	}
	return rec
}
