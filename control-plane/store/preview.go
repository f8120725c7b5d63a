package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/models/record"
)

// What enforce denies, or would: the records the filters shipped with a
// decision (record.Record.Deny, WouldDeny), kept for meshward preview. Per
// destination, counts per hour and decision ({dst}:deny:<hour>, fields
// "deny|<reason>" and "saved|<reason>"), which are exact whatever the
// traffic, and the newest records themselves ({dst}:denied, a stream capped
// at about MaxDenied), which give the examples and what exceptions added
// since would save. Both live as long as the other windowed keys
// (Retention); the destinations with any are a set.

// MaxDenied caps each destination's stream of denied records (about: the
// stream is trimmed by entries of a batch's records each).
const MaxDenied = 2000

// DenyHour is the width of the preview's counting windows.
const DenyHour = time.Hour

// Decision kinds counted per hour.
const (
	// KindDeny counts requests enforce denies (or would, in monitor).
	KindDeny = "deny"
	// KindSaved counts requests an exception let through that the
	// reasons alone would have denied.
	KindSaved = "saved"
)

func (s *Store) denyDestinationsKey() string { return s.cfg.Prefix + ":deny:destinations" }

// previewWrites adds a batch's decisions to the preview's keys.
func (s *Store) previewWrites(wr *writes, recs []record.Record) {
	ttl := int64(s.cfg.Retention / time.Second)
	counts := map[string]map[string]int64{}
	var countOrder []string
	kept := map[string][]*record.Record{}
	var keptOrder []string
	for i := range recs {
		r := &recs[i]
		kind, reason := KindDeny, r.Deny
		if reason == "" {
			kind, reason = KindSaved, r.WouldDeny
		}
		if reason == "" {
			continue
		}
		dst := r.Request.Destination
		key := s.tag(dst, "deny", strconv.FormatInt(r.TS.Unix()/int64(DenyHour/time.Second), 10))
		m := counts[key]
		if m == nil {
			m = map[string]int64{}
			counts[key] = m
			countOrder = append(countOrder, key)
		}
		m[kind+"|"+reason]++
		sk := s.tag(dst, "denied")
		if kept[sk] == nil {
			keptOrder = append(keptOrder, sk)
		}
		kept[sk] = append(kept[sk], r)
	}
	var dsts []any
	for _, key := range countOrder {
		for f, n := range counts[key] {
			wr.add(false, "HINCRBY", key, f, n)
		}
		wr.add(true, "EXPIRE", key, ttl)
	}
	for _, key := range keptOrder {
		rs := kept[key]
		if len(rs) > MaxDenied {
			rs = rs[len(rs)-MaxDenied:]
		}
		enc, err := json.Marshal(rs)
		if err != nil {
			continue // a record.Record always encodes
		}
		wr.add(false, "XADD", key, "MAXLEN", "~", max(1, MaxDenied/len(rs)), "*", "r", string(enc))
		wr.add(true, "EXPIRE", key, ttl)
		dsts = append(dsts, hashTag(key))
	}
	if len(dsts) > 0 {
		wr.addChunked("SADD", s.denyDestinationsKey(), dsts)
		wr.add(true, "EXPIRE", s.denyDestinationsKey(), ttl)
	}
}

// Denials is what the store holds about one destination's decisions
// since a time.
type Denials struct {
	Destination string
	// Counts are the requests counted per kind (KindDeny, KindSaved) and
	// reason, from the first whole hour at or before the time asked.
	Counts map[string]map[string]int64
	// From is the start of the first hour counted.
	From time.Time
	// Records are the newest records kept (at most about MaxDenied), oldest
	// first, each with the time the store took it in (Received).
	Records []record.Record
}

// DenyDestinations lists the destinations with decisions kept.
func (s *Store) DenyDestinations(ctx context.Context) ([]string, error) {
	out, err := s.rdb.SMembers(ctx, s.denyDestinationsKey()).Result()
	sort.Strings(out)
	return out, err
}

// Denials returns a destination's decisions counted since a time (by
// whole hours) and its records kept since then.
func (s *Store) Denials(ctx context.Context, dst string, since, until time.Time) (*Denials, error) {
	hour := int64(DenyHour / time.Second)
	first, last := since.Unix()/hour, until.Unix()/hour
	if last-first > int64(s.cfg.Retention/DenyHour)+1 {
		first = last - int64(s.cfg.Retention/DenyHour) - 1
	}
	d := &Denials{Destination: dst, Counts: map[string]map[string]int64{}, From: time.Unix(first*hour, 0).UTC()}
	pipe := s.rdb.Pipeline()
	var cmds []*redis.MapStringStringCmd
	for h := first; h <= last; h++ {
		cmds = append(cmds, pipe.HGetAll(ctx, s.tag(dst, "deny", strconv.FormatInt(h, 10))))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	for _, c := range cmds {
		for f, v := range c.Val() {
			n, _ := strconv.ParseInt(v, 10, 64)
			kind, reason, ok := cut(f)
			if !ok {
				continue
			}
			if d.Counts[kind] == nil {
				d.Counts[kind] = map[string]int64{}
			}
			d.Counts[kind][reason] += n
		}
	}
	msgs, err := s.rdb.XRange(ctx, s.tag(dst, "denied"), strconv.FormatInt(since.UnixMilli(), 10), "+").Result()
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		raw, _ := m.Values["r"].(string)
		var recs []record.Record
		if err := json.Unmarshal([]byte(raw), &recs); err != nil {
			return nil, fmt.Errorf("denied entry %s of %s: %w", m.ID, dst, err)
		}
		at := streamTime(m.ID)
		for i := range recs {
			recs[i].Received = at
		}
		d.Records = append(d.Records, recs...)
	}
	return d, nil
}

func cut(f string) (string, string, bool) {
	for i := 0; i < len(f); i++ {
		if f[i] == '|' {
			return f[:i], f[i+1:], true
		}
	}
	return "", "", false
}
