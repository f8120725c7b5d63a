package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/preview"
)

// allow is "meshward allow": grant an exception through the admin API
// (POST /api/v1/exceptions), list them (-list) or revoke one (-revoke ID).
func allow(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("allow", stderr)
	admin := fs.String("admin", "http://127.0.0.1:9091", "the control plane's admin URL")
	var af adminFlags
	af.register(fs)
	var req exception.Request
	fs.StringVar(&req.ID, "id", "", "name the exception (lower-case letters, digits, dashes; default: generated)")
	fs.StringVar(&req.Workload, "workload", "", `the workload it holds for (name.namespace), or "*" for every workload; required`)
	fs.StringVar(&req.Caller, "caller", "", "the caller (SPIFFE ID, workload or address; * matches any run of characters): with -workload, an edge")
	fs.StringVar(&req.Method, "method", "", "an HTTP method (with -route)")
	fs.StringVar(&req.Route, "route", "", "a route template as previews show it (/users/{num}/orders; * matches any run)")
	fs.StringVar(&req.Param, "param", "", "a parameter (query, form, JSON key or header) whose value is fine")
	fs.StringVar(&req.Shape, "shape", "", "the value's shape (as previews show it; * matches any run)")
	fs.StringVar(&req.ReasonCode, "reason-code", "", "a reason set aside (value_shape, keywords, new_caller, …)")
	fs.StringVar(&req.Reason, "reason", "", "why this is fine (in the audit log and the Event); required")
	fs.StringVar(&req.TTL, "ttl", "", "how long it holds (24h, 30m); or -expires")
	expires := fs.String("expires", "", "when it stops holding (RFC 3339); or -ttl")
	list := fs.Bool("list", false, "list the exceptions instead")
	revoke := fs.String("revoke", "", "revoke the exception of this id instead")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: allow takes flags only, not %q", ErrUsage, fs.Arg(0))
	}
	client, err := af.client()
	if err != nil {
		return err
	}
	base := strings.TrimRight(*admin, "/") + "/api/v1/exceptions"
	switch {
	case *list:
		return listExceptions(client, base, *asJSON, stdout)
	case *revoke != "":
		r, _ := http.NewRequest("DELETE", base+"/"+url.PathEscape(*revoke), nil)
		resp, err := client.Do(r)
		if err != nil {
			return fmt.Errorf("control plane at %s: %w", *admin, err)
		}
		defer resp.Body.Close()
		if err := answer(resp, "revoking "+*revoke, http.StatusOK); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", *revoke)
		return nil
	}
	if *expires != "" {
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			return fmt.Errorf("%w: -expires %q is not an RFC 3339 time", ErrUsage, *expires)
		}
		req.Expires = t
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := client.Post(base, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("control plane at %s: %w", *admin, err)
	}
	defer resp.Body.Close()
	if err := answer(resp, "the exception", http.StatusCreated); err != nil {
		return err
	}
	var e exception.Exception
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(&e)
	}
	fmt.Fprintf(stdout, "allowed %s: %s, until %s (by %s)\n", e.ID, e.Describe(), e.Expires.Format(time.RFC3339), e.Author)
	return nil
}

// answer turns an unexpected status into an error that says why: the
// refusal's problems (each naming its field), or the body.
func answer(resp *http.Response, what string, want int) error {
	if resp.StatusCode == want {
		return nil
	}
	if err := refused(resp, what); err != nil {
		return err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var r struct {
		Problems []string `json:"problems"`
	}
	if json.Unmarshal(b, &r) == nil && len(r.Problems) > 0 {
		return fmt.Errorf("%s refused (%s):\n  %s", what, resp.Status, strings.Join(r.Problems, "\n  "))
	}
	return fmt.Errorf("%s: %s: %s", what, resp.Status, strings.TrimSpace(string(b)))
}

func listExceptions(client *http.Client, base string, asJSON bool, stdout io.Writer) error {
	resp, err := client.Get(base)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := answer(resp, "exceptions", http.StatusOK); err != nil {
		return err
	}
	var v struct {
		Exceptions []exception.Exception `json:"exceptions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Errorf("exceptions: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(&v)
	}
	fmt.Fprintf(stdout, "%-20s %-22s %-20s %s\n", "ID", "EXPIRES", "AUTHOR", "WHAT")
	for _, e := range v.Exceptions {
		fmt.Fprintf(stdout, "%-20s %-22s %-20s %s\n", e.ID, e.Expires.Format(time.RFC3339), e.Author, e.Describe())
	}
	return nil
}

// previewCmd is "meshward preview": what enforce mode would deny, from the
// records the filters shipped (GET /api/v1/preview).
func previewCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("preview", stderr)
	admin := fs.String("admin", "http://127.0.0.1:9091", "the control plane's admin URL")
	var af adminFlags
	af.register(fs)
	mode := fs.String("mode", "enforce", "the mode to preview (enforce: monitor and learn deny nothing)")
	since := fs.Duration("since", 24*time.Hour, "how far back to look (at most the store's retention)")
	workload := fs.String("workload", "", "one workload only (name.namespace)")
	asJSON := fs.Bool("json", false, "print the JSON report")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *mode != "enforce" {
		return fmt.Errorf("%w: -mode %q: only enforce can be previewed (monitor and learn deny nothing)", ErrUsage, *mode)
	}
	if *since <= 0 {
		return fmt.Errorf("%w: -since %v must be positive", ErrUsage, *since)
	}
	client, err := af.client()
	if err != nil {
		return err
	}
	q := url.Values{"mode": {"enforce"}, "since": {since.String()}}
	if *workload != "" {
		q.Set("workload", *workload)
	}
	resp, err := client.Get(strings.TrimRight(*admin, "/") + "/api/v1/preview?" + q.Encode())
	if err != nil {
		return fmt.Errorf("control plane at %s: %w", *admin, err)
	}
	defer resp.Body.Close()
	if err := answer(resp, "preview", http.StatusOK); err != nil {
		return err
	}
	var rep preview.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return fmt.Errorf("preview: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(&rep)
	}
	fmt.Fprintf(stdout, "enforce would deny %d requests since %s (%d let through by exceptions)\n",
		rep.Denied, rep.From.Format(time.RFC3339), rep.Saved)
	for _, w := range rep.Workloads {
		fmt.Fprintf(stdout, "%s: %d denied, %d saved by exceptions\n", w.Workload, w.Denied, w.Saved)
		for _, r := range w.Reasons {
			fmt.Fprintf(stdout, "  %-24s %6d\n", r.Reason, r.Denied)
			for _, ex := range r.Examples {
				b, _ := json.Marshal(ex)
				fmt.Fprintf(stdout, "    e.g. %s\n", b)
			}
		}
	}
	return nil
}

// workloadsStatus prints each workload's readiness, mode and exceptions
// (GET /api/v1/workloads), for meshward status.
func workloadsStatus(client *http.Client, admin string, stdout io.Writer) error {
	resp, err := client.Get(admin + "/api/v1/workloads")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := answer(resp, "workloads", http.StatusOK); err != nil {
		return err
	}
	var v struct {
		Workloads []struct {
			Workload  string `json:"workload"`
			Mode      string `json:"mode"`
			Readiness *struct {
				Verdict  string  `json:"verdict"`
				Why      string  `json:"reason"`
				Learned  int     `json:"requests_learned"`
				Coverage float64 `json:"coverage"`
			} `json:"readiness"`
			Exceptions []string `json:"exceptions"`
		} `json:"workloads"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Errorf("workloads: %w", err)
	}
	if len(v.Workloads) == 0 {
		return nil
	}
	fmt.Fprintf(stdout, "%-32s %-8s %-18s %8s %8s %10s  %s\n", "WORKLOAD", "MODE", "READINESS", "LEARNED", "COVERAGE", "EXCEPTIONS", "WHY")
	for _, w := range v.Workloads {
		verdict, why, learned, coverage := "-", "", "-", "-"
		if r := w.Readiness; r != nil {
			verdict, why = r.Verdict, r.Why
			learned, coverage = fmt.Sprint(r.Learned), fmt.Sprintf("%.1f%%", 100*r.Coverage)
		}
		fmt.Fprintf(stdout, "%-32s %-8s %-18s %8s %8s %10d  %s\n", w.Workload, orDash(w.Mode), verdict, learned, coverage, len(w.Exceptions), why)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
