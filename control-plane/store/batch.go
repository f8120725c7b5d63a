package store

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// Batch is one batch of records, as one sender shipped it.
type Batch struct {
	// Key makes the batch idempotent: a batch whose key was applied within
	// the store's BatchTTL is not applied again, so a sender's retry (its
	// answer lost, or a timeout) never counts twice. The collector derives
	// it from the sender's identity and the batch's Idempotency-Key, so one
	// sender cannot claim another's. Empty: no protection (tools, tests).
	Key string
	// Records are the batch's records, already validated.
	Records []record.Record
	// Observe also appends the records to the observation stream the
	// leader's lateral-movement detection reads (PublishBatch), exactly
	// once with the rest.
	Observe bool
}

// ingestScript applies one hash slot's counting writes of a batch. Run by
// Redis, it is atomic; its marker (KEYS[1]) makes it idempotent: the first
// run sets the marker and applies the writes, a later run with the same
// marker changes nothing and returns 0. ARGV[2] is the marker's TTL in
// seconds; then come the writes, each as command, index of its key in
// KEYS, number of arguments, arguments.
const ingestScript = `
if ARGV[1] == '1' and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  redis.call(ARGV[i], KEYS[tonumber(ARGV[i + 1])], unpack(ARGV, i + 3, i + 2 + n))
  i = i + 3 + n
end
return 1
`

// slotWrites are the counting writes of a batch that fall in one hash slot
// (one hash tag, or one untagged key).
type slotWrites struct {
	keys  []string
	index map[string]int
	args  []any
}

// writes are a batch's writes: the counting ones (HINCRBY, HINCRBYFLOAT,
// XADD), which must apply once, grouped by hash slot so that each group
// runs as one guarded script on one Redis Cluster node; and the idempotent
// ones (PFADD, SADD, EXPIRE), which may run again harmlessly and are sent
// as they are.
type writes struct {
	groups map[string]*slotWrites
	order  []string
	plain  [][]any
}

// add appends a write.
func (w *writes) add(idempotent bool, cmd, key string, args ...any) {
	if idempotent {
		w.plain = append(w.plain, append([]any{cmd, key}, args...))
		return
	}
	tag := hashTag(key)
	g := w.groups[tag]
	if g == nil {
		g = &slotWrites{index: map[string]int{}}
		w.groups[tag] = g
		w.order = append(w.order, tag)
	}
	i, ok := g.index[key]
	if !ok {
		g.keys = append(g.keys, key)
		i = len(g.keys)
		g.index[key] = i
	}
	g.args = append(g.args, cmd, i, len(args))
	g.args = append(g.args, args...)
}

// maxArgs bounds one write's members (a command of thousands of arguments
// holds Redis up as one).
const maxArgs = 1000

// addChunked adds an idempotent write of many members, in pieces.
func (w *writes) addChunked(cmd, key string, members []any) {
	for len(members) > 0 {
		n := min(len(members), maxArgs)
		w.add(true, cmd, key, members[:n]...)
		members = members[n:]
	}
}

// hashTag is what Redis Cluster hashes of a key: the text between the first
// { and the next }, when not empty; else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// IngestBatch stores a batch: edge counts per destination and window,
// fan-out per source and window, route statistics, per-version verdicts,
// training samples of normal requests, and (Observe) the observation
// stream entry. Counts are summed within the batch first, so Redis sees one
// write per key and field.
//
// The writes are grouped by hash slot and each group runs as one Lua
// script: atomic on its node, and, with a Key, guarded by a marker in its
// slot so that it applies at most once within BatchTTL. On a single Redis
// every group runs in one MULTI/EXEC, so the whole batch is atomic; on a
// Redis Cluster a batch interrupted between nodes is completed by its
// retry, and what was applied is not applied again. duplicate reports that
// the whole batch had been applied before.
func (s *Store) IngestBatch(ctx context.Context, b Batch) (duplicate bool, err error) {
	recs := b.Records
	if len(recs) == 0 {
		return false, nil
	}
	counts := map[string]map[string]int64{} // key → field → increment
	var countOrder []string
	fan := map[string][]any{} // key → distinct destinations
	fanSeen := map[string]bool{}
	var fanOrder []string
	samples := map[string][]*models.Request{}
	var sampleOrder []string
	weights := map[string]map[string]float64{} // key → field → weighted increment
	var weightOrder []string
	count := func(key, field string) {
		m := counts[key]
		if m == nil {
			m = map[string]int64{}
			counts[key] = m
			countOrder = append(countOrder, key)
		}
		m[field]++
	}
	watch, err := s.watched(ctx)
	if err != nil {
		return false, err
	}
	for i := range recs {
		r := &recs[i]
		q := &r.Request
		w := strconv.FormatInt(s.window(r.TS), 10)
		count(s.tag(q.Destination, "edges", w), q.Source+"|"+q.Method+"|"+r.Route)
		fk := s.tag(q.Source, "fanout", w)
		if fan[fk] == nil {
			fanOrder = append(fanOrder, fk)
		}
		if k := fk + "\x00" + q.Destination; !fanSeen[k] {
			fanSeen[k] = true
			fan[fk] = append(fan[fk], q.Destination)
		}
		route := s.tag(q.Destination, "route", q.Method+" "+r.Route)
		count(route, "count")
		if q.Status >= 100 && q.Status < 600 {
			count(route, "status_"+strconv.Itoa(q.Status/100)+"xx")
		}
		if r.Flagged {
			count(route, "flagged")
		}
		if r.ModelSHA256 != "" {
			// Flagged and total requests scored by any section, and by
			// the sections a canary watches (its own and the stable ones
			// of the same workloads), for the canary decision; unflagged
			// records stand for the share the filter did not ship. One
			// key per window for the whole mesh, with a few fields
			// whatever its size: a record names its section, and the
			// canary says which ones it watches.
			vk := s.verdictKey(w)
			m := weights[vk]
			if m == nil {
				m = map[string]float64{}
				weights[vk] = m
				weightOrder = append(weightOrder, vk)
			}
			fields := []string{VerdictsAll}
			if role := watch.role(r.ModelSHA256); role != "" {
				fields = append(fields, watch.version+"|"+role)
			}
			for _, f := range fields {
				m[f+"|requests"] += r.Weight()
				if r.Flagged {
					count(vk, f+"|flagged")
				}
			}
		}
		// Training learns normal requests, never an unidentified caller;
		// and a flagged request an exception set a reason of aside, which
		// the trainer learns only if the exceptions in force explain it.
		if (!r.Flagged || len(r.Excepted) > 0) && q.Source != models.UnknownSource {
			k := s.tag(q.Destination, "samples")
			if samples[k] == nil {
				sampleOrder = append(sampleOrder, k)
			}
			samples[k] = append(samples[k], q)
		}
	}
	wr := &writes{groups: map[string]*slotWrites{}}
	ttl := int64(s.cfg.Retention / time.Second)
	// A batch's samples of one destination go in one stream entry; the cap
	// counts entries, so it is divided by the batch's share.
	for _, key := range sampleOrder {
		qs := samples[key]
		if int64(len(qs)) > s.cfg.MaxSamples {
			qs = qs[int64(len(qs))-s.cfg.MaxSamples:]
		}
		enc, err := json.Marshal(qs)
		if err != nil {
			return false, err
		}
		maxLen := max(1, s.cfg.MaxSamples/int64(len(qs)))
		wr.add(false, "XADD", key, "MAXLEN", "~", maxLen, "*", "r", string(enc))
		wr.add(true, "EXPIRE", key, ttl)
	}
	for _, key := range countOrder {
		for f, n := range counts[key] {
			wr.add(false, "HINCRBY", key, f, n)
		}
		wr.add(true, "EXPIRE", key, ttl)
	}
	for _, key := range weightOrder {
		for f, n := range weights[key] {
			wr.add(false, "HINCRBYFLOAT", key, f, strconv.FormatFloat(n, 'f', -1, 64))
		}
		wr.add(true, "EXPIRE", key, ttl)
	}
	for _, key := range fanOrder {
		wr.addChunked("PFADD", key, fan[key])
		wr.add(true, "EXPIRE", key, ttl)
	}
	// What enforce denies, or would, for meshward preview (preview.go).
	s.previewWrites(wr, recs)
	// The destinations seen lately, for the trainer.
	seen := map[string]bool{}
	var dsts []any
	for i := range recs {
		if d := recs[i].Request.Destination; !seen[d] {
			seen[d] = true
			dsts = append(dsts, d)
		}
	}
	dk := s.cfg.Prefix + ":destinations"
	wr.addChunked("SADD", dk, dsts)
	wr.add(true, "EXPIRE", dk, ttl)
	if b.Observe {
		enc, err := json.Marshal(recs)
		if err != nil {
			return false, err
		}
		wr.add(false, "XADD", s.observationsKey(), "MAXLEN", "~", MaxObservationBatches, "*", "b", string(enc))
	}
	return s.runWrites(ctx, wr, b.Key)
}

// ingestSHA names the script for EVALSHA: the batch carries only its
// arguments, not the script's text.
var ingestSHA = func() string { h := sha1.Sum([]byte(ingestScript)); return hex.EncodeToString(h[:]) }()

// runWrites runs each slot's script, and the idempotent writes: in one
// MULTI/EXEC on a single Redis (the batch is atomic), in one pipeline over
// the nodes of a Cluster. Without a key the counting writes are sent as
// they are too.
func (s *Store) runWrites(ctx context.Context, wr *writes, key string) (duplicate bool, err error) {
	_, cluster := s.rdb.(*redis.ClusterClient)
	var marker string
	if key != "" {
		sum := sha256.Sum256([]byte(key))
		marker = hex.EncodeToString(sum[:16])
	}
	markerTTL := int64(s.cfg.BatchTTL / time.Second)
	type call struct {
		keys []string
		args []any
		cmd  *redis.Cmd
	}
	var calls []*call
	var counting [][]any // without a key: the counting writes, sent as they are
	for _, tag := range wr.order {
		g := wr.groups[tag]
		if marker == "" {
			for i := 0; i < len(g.args); i += 3 + g.args[i+2].(int) {
				n := g.args[i+2].(int)
				counting = append(counting, append([]any{g.args[i], g.keys[g.args[i+1].(int)-1]}, g.args[i+3:i+3+n]...))
			}
			continue
		}
		// The marker lives in the group's slot: {tag} is its hash tag.
		c := &call{keys: append([]string{s.cfg.Prefix + ":batch:{" + tag + "}:" + marker}, g.keys...), args: append([]any{"1", markerTTL}, g.args...)}
		// Key indexes shift by the marker.
		for i := 2; i < len(c.args); i += 3 + c.args[i+2].(int) {
			c.args[i+1] = c.args[i+1].(int) + 1
		}
		calls = append(calls, c)
	}
	if len(calls) > 0 && !s.scriptLoaded.Load() {
		if err := s.rdb.ScriptLoad(ctx, ingestScript).Err(); err != nil {
			return false, err
		}
		s.scriptLoaded.Store(true)
	}
	var pipe redis.Pipeliner
	if cluster {
		pipe = s.rdb.Pipeline()
	} else {
		pipe = s.rdb.TxPipeline()
	}
	// The counting writes first: the EXPIREs among the others must find
	// their keys.
	for _, c := range calls {
		c.cmd = pipe.EvalSha(ctx, ingestSHA, c.keys, c.args...)
	}
	for _, args := range append(counting, wr.plain...) {
		pipe.Do(ctx, args...)
	}
	_, err = pipe.Exec(ctx)
	if err != nil {
		// A Redis restarted since the script was loaded runs none of the
		// scripts (NOSCRIPT): those alone run again, with the script's
		// text. Scripts that ran are not repeated; the idempotent writes
		// are, harmlessly.
		retry := s.rdb.Pipeline()
		n := 0
		for _, c := range calls {
			if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
				c.cmd = retry.Eval(ctx, ingestScript, c.keys, c.args...)
				n++
			}
		}
		if n == 0 {
			return false, err
		}
		for _, args := range wr.plain {
			retry.Do(ctx, args...)
		}
		if _, err := retry.Exec(ctx); err != nil {
			return false, err
		}
	}
	dup := false
	for _, c := range calls {
		n, err := c.cmd.Int()
		if err != nil {
			return false, err
		}
		if n != 0 {
			return false, nil // applied now, in this slot at least
		}
		dup = true
	}
	return dup, nil
}
