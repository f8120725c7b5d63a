package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/replay/source"
)

// Live sends the requests to a listener (an Envoy with the meshward filter)
// and reads the verdicts back: a 403 carrying meshward's reason header is a
// denial (enforce mode); otherwise the score and reason headers on the
// response (the filter's response_score option) are the verdict. Requests
// keep their original pacing, scaled by Speed, with at most Concurrency in
// flight; with Speed 0 they go as fast as Concurrency allows.
type Live struct {
	// URL is the listener's base URL (http://127.0.0.1:10000).
	URL string
	// Speed scales the original pacing: 1 real time, 10 ten times faster,
	// 0 no pacing.
	Speed float64
	// Concurrency bounds the requests in flight (default 8).
	Concurrency int
	// Timeout bounds each request (default 10 s).
	Timeout time.Duration
	// Client is the HTTP client (default: a fresh one).
	Client *http.Client
	// ScoreHeader is the filter's score header (default x-meshward-score).
	ScoreHeader string
}

// Name implements Runner.
func (*Live) Name() string { return "live" }

// Close implements Runner.
func (*Live) Close() error { return nil }

// hopHeaders are not forwarded: they describe the original connection.
var hopHeaders = map[string]bool{"connection": true, "keep-alive": true, "transfer-encoding": true, "te": true,
	"upgrade": true, "proxy-connection": true, "content-length": true, "host": true}

// Run implements Runner. A request that cannot be sent is an unscored
// result, not an error: the run goes on.
func (l *Live) Run(recs []*source.Record) ([]Result, error) {
	base, err := url.Parse(l.URL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("live runner: %q is not a base URL such as http://127.0.0.1:10000", l.URL)
	}
	if l.Speed < 0 {
		return nil, errors.New("live runner: speed must not be negative")
	}
	conc := l.Concurrency
	if conc <= 0 {
		conc = 8
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	client := l.Client
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	scoreHeader := l.ScoreHeader
	if scoreHeader == "" {
		scoreHeader = pluginconfig.DefaultScoreHeader
	}
	out := make([]Result, len(recs))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	start := time.Now()
	var first time.Time
	for i, rec := range recs {
		if l.Speed > 0 && !rec.TS.IsZero() {
			if first.IsZero() {
				first = rec.TS
			}
			due := start.Add(time.Duration(float64(rec.TS.Sub(first)) / l.Speed))
			if d := time.Until(due); d > 0 {
				time.Sleep(d) // pacing the replay itself, not synchronisation
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, rec *source.Record) {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = l.send(client, base, rec, scoreHeader, timeout)
		}(i, rec)
	}
	wg.Wait()
	return out, nil
}

func (l *Live) send(client *http.Client, base *url.URL, rec *source.Record, scoreHeader string, timeout time.Duration) Result {
	r := &rec.Request
	target := *base
	target.Path = strings.TrimSuffix(base.Path, "/") + r.Path
	target.RawQuery = r.Query
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), bytes.NewReader(r.Body))
	if err != nil {
		return Result{}
	}
	for _, h := range r.Headers {
		if !hopHeaders[h.Name] && h.Name != scoreHeader && h.Name != "x-meshward-reason" {
			req.Header.Add(h.Name, h.Value)
		}
	}
	if r.Destination != "" {
		req.Host = r.Destination
	}
	resp, err := client.Do(req)
	if err != nil {
		return Result{}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	res := Result{}
	if s := resp.Header.Get(scoreHeader); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			res.Score, res.Scored = f, true
		}
	}
	if reason := resp.Header.Get("x-meshward-reason"); reason != "" {
		res.Flagged = true
		res.Reasons = strings.Split(reason, ",")
	}
	return res
}
