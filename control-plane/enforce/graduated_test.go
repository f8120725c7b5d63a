package enforce_test

import (
	"strings"
	"testing"
	"time"

	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshward/meshward/internal/istiofake"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// TestTrainTicketEnforceIsGraduated is day two's held-out-style replay on
// TrainTicket (learn the first twelve minutes, replay the next four): in
// enforce mode, as the filters decide it with the default deny_reasons, a
// benign release calling one new dependency steadily is flagged but never
// denied; injections on known edges in the same traffic are denied
// inline; a compromised service's fan-out is not denied request by
// request but its principal is quarantined by the detector.
func TestTrainTicketEnforceIsGraduated(t *testing.T) {
	learn, benign := trainTicket(t)
	m := learnModel(t, learn)
	callees, dsts, srcs := serviceGraph(learn)
	start := benign[len(benign)/2].TS

	traffic := append([]*source.Record(nil), benign...)
	// The release: one service starts calling one new dependency, steadily.
	releaser, newDep := srcs[0], ""
	for _, d := range dsts {
		if !callees[releaser][d] && !strings.HasSuffix(releaser, "/"+strings.TrimSuffix(d, ".train")) {
			newDep = d
			break
		}
	}
	isRelease := map[*source.Record]bool{}
	for i := 0; i < 200; i++ {
		r := &source.Record{TS: start.Add(time.Duration(i) * 500 * time.Millisecond), Label: source.LabelNormal,
			Request: models.Request{Method: "GET", Path: "/api/v1/" + strings.TrimSuffix(newDep, ".train") + "/query", Source: releaser, Destination: newDep, Status: 200, ResponseBytes: 512}}
		isRelease[r] = true
		traffic = append(traffic, r)
	}
	// Injections on known edges: the same request as a benign one, with a
	// payload in a query parameter.
	isInjection := map[*source.Record]bool{}
	payloads := []string{"1%27%20UNION%20SELECT%20username,password%20FROM%20users--", "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
		"%3Cscript%3Ealert(document.cookie)%3C/script%3E", "1;cat%20/etc/shadow", "%27%20OR%20%271%27=%271"}
	for i, p := range payloads {
		b := benign[(i+1)*len(benign)/(len(payloads)+2)]
		r := &source.Record{TS: b.TS, Label: "attack", Request: b.Request}
		r.Request.Path += "?id=" + p
		r.Request.Status = 200
		isInjection[r] = true
		traffic = append(traffic, r)
	}
	// The compromised service with the fewest callees fans out.
	victim := srcs[0]
	for _, s := range srcs {
		if len(callees[s]) < len(callees[victim]) && s != releaser {
			victim = s
		}
	}
	isFanOut := map[*source.Record]bool{}
	n := 0
	for _, d := range dsts {
		if callees[victim][d] || n >= 6 {
			continue
		}
		r := &source.Record{TS: start.Add(time.Minute + time.Duration(n)*700*time.Millisecond), Label: "attack",
			Request: models.Request{Method: "GET", Path: "/api/v1/admin/users", Source: victim, Destination: d, Status: 403}}
		isFanOut[r] = true
		traffic = append(traffic, r)
		n++
	}
	sortByTime(traffic)

	res, err := (&runner.Native{Model: m, Enforce: &runner.Enforce{}}).Run(traffic)
	if err != nil {
		t.Fatal(err)
	}
	var releaseFlagged, releaseDenied, injDenied, fanDenied, benignDenied int
	for i, r := range traffic {
		switch {
		case isRelease[r]:
			releaseFlagged += b2i(res[i].Flagged)
			releaseDenied += b2i(res[i].Denied)
		case isInjection[r]:
			if res[i].Denied {
				injDenied++
			} else {
				t.Errorf("injection %s → %s %s not denied: score %.2f, reasons %v", r.Request.Source, r.Request.Destination, r.Request.Path, res[i].Score, res[i].Reasons)
			}
		case isFanOut[r]:
			fanDenied += b2i(res[i].Denied)
		default:
			benignDenied += b2i(res[i].Denied)
		}
	}
	t.Logf("release %s → %s: %d of 200 flagged, %d denied; injections denied %d of %d; fan-out denied inline %d of %d; benign denied %d of %d",
		releaser, newDep, releaseFlagged, releaseDenied, injDenied, len(isInjection), fanDenied, len(isFanOut), benignDenied, len(benign))
	if releaseDenied != 0 {
		t.Errorf("enforce denied %d of the benign release's 200 requests", releaseDenied)
	}
	if releaseFlagged == 0 {
		t.Errorf("the release's new dependency was not even flagged: the test no longer shows graduation")
	}
	if max := len(benign) / 1000; benignDenied > max {
		t.Errorf("enforce denied %d of %d benign requests (> 0.1 %%)", benignDenied, len(benign))
	}

	// The control: denying on structure too denies the release.
	all, err := (&runner.Native{Model: m, Enforce: &runner.Enforce{DenyReasons: []string{"default", "structure"}}}).Run(traffic)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for i, r := range traffic {
		if isRelease[r] && all[i].Denied {
			denied++
		}
	}
	if denied != releaseFlagged {
		t.Errorf("with deny_reasons default,structure %d of the release's %d flagged requests were denied, want all", denied, releaseFlagged)
	}

	// The detector, fed the same traffic, fences the compromised principal
	// and only it.
	ic := istiofake.New()
	p := newReplayer(t, m, ic, kubefake.NewClientset())
	p.run(traffic)
	held := ownedPolicies(t, ic)
	if len(held) < 2 {
		t.Fatalf("the fan-out of %s was not quarantined: %v (decisions %+v)", victim, held, p.loop.Decisions())
	}
	for name, v := range held {
		if strings.TrimSuffix(v, " dry-run") != victim {
			t.Errorf("policy %s is for %q, want only %s's", name, v, victim)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
