package models

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// The model codec. A model travels in one of two kinds of encoding, with the
// same header:
//
//	magic "MWMD" | version u16 | kind u16 | payload length u32 | sha256(payload) | payload
//
// (integers little-endian). The payload is a sequence of uvarints, strings
// (uvarint length + bytes) and float64s (8 bytes, little-endian).
//
// A section (kind 2) is what a filter receives: one workload's part of a
// model, on its own. Its payload is
//
//	seed uvarint | threshold f64 | target_fpr f64 | for string |
//	records uvarint (0 or 1) | record | content
//
// where "for" names the workload the section is for (GlobalWorkload: the
// fallback, which any workload without a section of its own accepts), the
// record is that workload's part (or the fallback's; none when the model
// has neither) and content is the content model every section of a model
// shares. A section carries nothing about the training round besides what
// scores with it (no training time, no mesh-wide counts), so retraining a
// workload on the same inputs gives the same bytes, hence the same sha256:
// the section's version, which is what xDS versions and what the filter
// reports in its records.
//
// A mesh (kind 1) is a whole model, for offline use (meshward train -out,
// replay, inspection):
//
//	trained_at varint | samples uvarint | seed uvarint | threshold f64 |
//	target_fpr f64 | records uvarint | record... (sorted by name) | content
//
// A record (appendWorkload and decoder.workload, the one place its fields
// are written and read) is
//
//	name string | sources (count, strings) | routes (count; method, template,
//	count, param_obs, param_singletons, numbers) | edges (count; source,
//	route, count) | params (count; see appendParam) | cal_base f64 |
//	cal_center f64 | resp_base f64 | resp_center f64 | tails |
//	value_key_id uvarint
//
// so a field added to every workload (a calibration per component, a
// statistic per parameter) is added there, once, with one version bump.
// Decode checks every length, index and the checksum, and rejects trailing
// bytes.

// CodecVersion is the version of the encoding Encode writes. It must be
// bumped on any change to what the stored numbers mean — the layout, but also
// hashing, feature extraction, character classes or route templating — so a
// filter built with other semantics refuses a model instead of misreading it.
// Version 7 made the section the unit of delivery. Version 8 added per-part
// tails (Workload.Tails), per-parameter tails and trigram counts, each
// route's largest request. Version 9 keeps an enumerated parameter's values
// themselves, not their hashes alone (ParamModel.Values). Version 10 lets a
// parameter's enumerated values be shapes (ParamModel.ShapeEnum): a model
// trained on the shapes filters ship enumerates them. Version 11 lets them
// be keyed digests of the values (ParamModel.HashEnum), with the ID of the
// key (Workload.ValueKeyID). Version 12 counts the values whose keywords
// training knew (ParamModel.KeywordBase): records that mark keywords teach
// a model trained on shapes how often a parameter's values carry them.
// Version 13 keeps the lengths a parameter's values had (ParamModel.
// Lengths, LenSingletons). Version 14 reads a JSON body as the form of its
// fields (JSONFields): a model of version 13 learned such a body as one
// value, which scoring no longer reads.
const CodecVersion = 14

// The kinds of encoding (the header's u16 after the version).
const (
	kindMesh    = 1
	kindSection = 2
)

// MaxSectionBytes bounds an encoded section: what a filter accepts in its
// configuration. The control plane's own budget is smaller (trainer,
// -max-section-bytes); this is the codec's hard limit.
const MaxSectionBytes = 1 << 20

// MaxMeshBytes bounds an encoded whole-mesh model (offline files only: a
// filter never decodes one).
const MaxMeshBytes = 256 << 20

const (
	headerSize   = 4 + 2 + 2 + 4 + sha256.Size
	maxStringLen = 4096
)

var magic = [4]byte{'M', 'W', 'M', 'D'}

var (
	// ErrModelFormat is wrapped by every decoding error.
	ErrModelFormat = errors.New("invalid model")
	// ErrModelTooLarge is returned for encodings over MaxSectionBytes (a
	// section) or MaxMeshBytes (a whole model).
	ErrModelTooLarge = errors.New("model too large")
	// ErrNotSection is returned by DecodeSection for a whole-mesh model.
	ErrNotSection = errors.New("not a section")
)

// Encode returns the binary encoding of m — a whole mesh, or a section when
// m was decoded from one (SectionFor set) — and records its sha256 and size
// in m. The output depends only on the model's content.
func Encode(m *Model) ([]byte, error) {
	var out []byte
	var err error
	if m.SectionFor != "" {
		out, err = encodeSection(m, m.SectionFor, m.Workloads[m.SectionFor])
	} else {
		out, err = encodeMesh(m)
	}
	if err != nil {
		return nil, err
	}
	m.sha = [32]byte(out[12:44])
	m.size = len(out)
	return out, nil
}

func encodeMesh(m *Model) ([]byte, error) {
	p := make([]byte, 0, 4096)
	p = binary.AppendVarint(p, m.Meta.TrainedAt.UnixNano())
	p = binary.AppendUvarint(p, m.Meta.Samples)
	p = binary.AppendUvarint(p, m.Meta.Seed)
	p = appendFloat(p, m.Meta.Threshold)
	p = appendFloat(p, m.Meta.TargetFPR)
	names := sortedKeys(m.Workloads)
	p = binary.AppendUvarint(p, uint64(len(names)))
	for _, name := range names {
		p = appendWorkload(p, m.Workloads[name])
	}
	p = appendContent(p, m.Content)
	return seal(kindMesh, p, MaxMeshBytes)
}

// EncodeSection returns the section of m a sidecar of workload receives:
// the workload's own part if m has one, else the fallback section (its
// global part, if any). m may be a whole model or a section; it is not
// changed.
func EncodeSection(m *Model, workload string) ([]byte, error) {
	w := m.Workloads[workload]
	if w == nil || workload == "" {
		workload, w = GlobalWorkload, m.Workloads[GlobalWorkload]
	}
	return encodeSection(m, workload, w)
}

func encodeSection(m *Model, forName string, w *Workload) ([]byte, error) {
	p := make([]byte, 0, 4096)
	p = binary.AppendUvarint(p, m.Meta.Seed)
	p = appendFloat(p, m.Meta.Threshold)
	p = appendFloat(p, m.Meta.TargetFPR)
	p = appendString(p, forName)
	if w == nil {
		p = binary.AppendUvarint(p, 0)
	} else {
		if w.Name != forName {
			return nil, fmt.Errorf("models: the section for %q would carry the part of %q", forName, w.Name)
		}
		p = binary.AppendUvarint(p, 1)
		p = appendWorkload(p, w)
	}
	p = appendContent(p, m.Content)
	b, err := seal(kindSection, p, MaxSectionBytes)
	if err != nil {
		return nil, fmt.Errorf("section of %s: %w", forName, err)
	}
	return b, nil
}

// seal puts the header before a payload.
func seal(kind uint16, p []byte, limit int) ([]byte, error) {
	if headerSize+len(p) > limit {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrModelTooLarge, headerSize+len(p), limit)
	}
	out := make([]byte, headerSize, headerSize+len(p))
	copy(out, magic[:])
	binary.LittleEndian.PutUint16(out[4:], CodecVersion)
	binary.LittleEndian.PutUint16(out[6:], kind)
	binary.LittleEndian.PutUint32(out[8:], uint32(len(p)))
	sum := sha256.Sum256(p)
	copy(out[12:], sum[:])
	return append(out, p...), nil
}

// appendWorkload encodes one workload's record. Its fields are written here
// and read in decoder.workload, nowhere else.
func appendWorkload(p []byte, w *Workload) []byte {
	p, _ = appendWorkloadCal(p, w)
	return p
}

// appendWorkloadCal is appendWorkload, also returning where in p its
// calibration (CalBase, CalCenter, RespBase, RespCenter: four fixed-width
// floats) lies, for patchCalibration.
func appendWorkloadCal(p []byte, w *Workload) ([]byte, int) {
	p = appendString(p, w.Name)
	p = binary.AppendUvarint(p, uint64(len(w.Sources)))
	for _, s := range w.Sources {
		p = appendString(p, s)
	}
	p = binary.AppendUvarint(p, uint64(len(w.Routes)))
	for _, r := range w.Routes {
		p = appendString(p, r.Method)
		p = appendString(p, r.Template)
		p = binary.AppendUvarint(p, uint64(r.Count))
		p = binary.AppendUvarint(p, uint64(r.ParamObs))
		p = binary.AppendUvarint(p, uint64(r.ParamSingletons))
		p = appendNumbers(p, &r.Numbers)
	}
	p = binary.AppendUvarint(p, uint64(len(w.Edges)))
	for _, e := range w.Edges {
		p = binary.AppendUvarint(p, uint64(e.Source))
		p = binary.AppendUvarint(p, uint64(e.Route))
		p = binary.AppendUvarint(p, uint64(e.Count))
	}
	p = binary.AppendUvarint(p, uint64(len(w.Params)))
	for i := range w.Params {
		p = appendParam(p, &w.Params[i])
	}
	cal := len(p)
	p = appendFloat(p, w.CalBase)
	p = appendFloat(p, w.CalCenter)
	p = appendFloat(p, w.RespBase)
	p = appendFloat(p, w.RespCenter)
	p = appendTails(p, &w.Tails)
	return binary.AppendUvarint(p, uint64(w.ValueKeyID)), cal
}

// patchCalibration rewrites the calibration of an encoded workload, at cal
// (appendWorkloadCal), without decoding it.
func patchCalibration(rec []byte, cal int, base, center, respBase, respCenter float64) {
	for i, f := range [4]float64{base, center, respBase, respCenter} {
		binary.LittleEndian.PutUint64(rec[cal+8*i:], math.Float64bits(f))
	}
}

// Decode parses an encoded model, a whole mesh or a section. Every error
// wraps ErrModelFormat (or ErrModelTooLarge) and says what was wrong and at
// which byte.
func Decode(b []byte) (*Model, error) {
	m, _, err := decode(b, false)
	return m, err
}

// DecodeSection parses an encoded section, as a filter does: a whole-mesh
// model is refused (ErrNotSection) before its payload is read.
func DecodeSection(b []byte) (*Model, error) {
	m, _, err := decode(b, true)
	return m, err
}

// SplitSection checks an encoded section and splits it into the content
// model's encoding (the payload's tail, shared by every section of a model)
// and everything before it, so that a store keeps the content model once:
// JoinSection(rest, content) gives the section back.
func SplitSection(b []byte) (rest, content []byte, err error) {
	_, at, err := decode(b, true)
	if err != nil {
		return nil, nil, err
	}
	return b[:at], b[at:], nil
}

// JoinSection reassembles what SplitSection split and checks it.
func JoinSection(rest, content []byte) ([]byte, error) {
	b := make([]byte, 0, len(rest)+len(content))
	b = append(append(b, rest...), content...)
	if _, err := DecodeSection(b); err != nil {
		return nil, err
	}
	return b, nil
}

// decode parses b; contentAt is where the content model starts in b.
func decode(b []byte, sectionOnly bool) (m *Model, contentAt int, err error) {
	if len(b) < headerSize {
		return nil, 0, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrModelFormat, len(b), headerSize)
	}
	if [4]byte(b[:4]) != magic {
		return nil, 0, fmt.Errorf("%w: bad magic %q (want %q)", ErrModelFormat, b[:4], magic[:])
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != CodecVersion {
		hint := ""
		if v < CodecVersion {
			hint = " (an older model: retrain it with this version, and give each filter its workload's section: meshward model config -workload W)"
		}
		return nil, 0, fmt.Errorf("%w: codec version %d, this build reads version %d%s", ErrModelFormat, v, CodecVersion, hint)
	}
	kind := binary.LittleEndian.Uint16(b[6:])
	switch {
	case kind != kindMesh && kind != kindSection:
		return nil, 0, fmt.Errorf("%w: unknown kind %d (want %d, a whole mesh, or %d, a section)", ErrModelFormat, kind, kindMesh, kindSection)
	case kind == kindMesh && sectionOnly:
		return nil, 0, fmt.Errorf("%w: %w: this is a whole-mesh model (%d bytes); a filter takes one workload's section: extract it with meshward model config -workload W", ErrModelFormat, ErrNotSection, len(b))
	case kind == kindSection && len(b) > MaxSectionBytes:
		return nil, 0, fmt.Errorf("%w: a section of %d bytes, limit %d", ErrModelTooLarge, len(b), MaxSectionBytes)
	case len(b) > MaxMeshBytes:
		return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrModelTooLarge, len(b), MaxMeshBytes)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if uint64(n) != uint64(len(b)-headerSize) {
		return nil, 0, fmt.Errorf("%w: header says %d payload bytes, found %d (truncated or padded)", ErrModelFormat, n, len(b)-headerSize)
	}
	payload := b[headerSize:]
	sum := sha256.Sum256(payload)
	if [32]byte(b[12:44]) != sum {
		return nil, 0, fmt.Errorf("%w: sha256 mismatch (corrupted)", ErrModelFormat)
	}

	d := decoder{b: payload, base: headerSize}
	m = &Model{sha: sum, size: len(b), Workloads: map[string]*Workload{}}
	if kind == kindMesh {
		m.Meta.TrainedAt = time.Unix(0, d.varint("trained_at")).UTC()
		m.Meta.Samples = d.uvarint("samples")
	}
	m.Meta.Seed = d.uvarint("seed")
	m.Meta.Threshold = d.float("threshold")
	m.Meta.TargetFPR = d.float("target_fpr")
	if d.err == nil && !(m.Meta.Threshold >= 0 && m.Meta.Threshold <= 1) {
		d.fail("threshold", "%v is outside [0,1]", m.Meta.Threshold)
	}
	if d.err == nil && !(m.Meta.TargetFPR >= 0 && m.Meta.TargetFPR <= 1) {
		d.fail("target_fpr", "%v is outside [0,1]", m.Meta.TargetFPR)
	}
	if kind == kindSection {
		m.SectionFor = d.str("section workload")
		if d.err == nil && m.SectionFor == "" {
			d.fail("section workload", "empty")
		}
	}
	nw := d.count("workloads", 3)
	if d.err == nil && kind == kindSection && (nw > 1 || nw == 0 && m.SectionFor != GlobalWorkload) {
		d.fail("workloads", "a section for %q holds %d records (want 1, or 0 for the fallback)", m.SectionFor, nw)
	}
	prev := ""
	for i := 0; i < nw && d.err == nil; i++ {
		w := d.workload()
		switch {
		case d.err != nil:
		case kind == kindSection && w.Name != m.SectionFor:
			d.fail("workload name", "the section for %q holds the record of %q", m.SectionFor, w.Name)
		case i > 0 && w.Name <= prev:
			d.fail("workload name", "%q is out of order or repeated", w.Name)
		default:
			prev = w.Name
			m.Workloads[w.Name] = w
		}
	}
	contentAt = headerSize + d.off
	m.Content = d.content()
	for _, w := range m.Workloads {
		w.attachContent(m.Content)
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail("end", "%d trailing bytes", len(d.b)-d.off)
	}
	if d.err != nil {
		return nil, 0, d.err
	}
	return m, contentAt, nil
}

// workload decodes one record (see appendWorkload) and indexes it; nil
// after an error.
func (d *decoder) workload() *Workload {
	w := &Workload{Name: d.str("workload name")}
	ctx := "workload " + w.Name
	w.Sources = make([]string, d.count(ctx+" sources", 1))
	for j := range w.Sources {
		w.Sources[j] = d.str(ctx + " source")
	}
	w.Routes = make([]Route, d.count(ctx+" routes", 40))
	for j := range w.Routes {
		w.Routes[j] = Route{Method: d.str(ctx + " route method"), Template: d.str(ctx + " route template"), Count: d.u32(ctx + " route count"),
			ParamObs: d.u32(ctx + " route param_obs"), ParamSingletons: d.u32(ctx + " route param_singletons")}
		d.numbers(&w.Routes[j].Numbers, ctx+" route "+w.Routes[j].Template)
	}
	w.Edges = make([]Edge, d.count(ctx+" edges", 3))
	for j := range w.Edges {
		e := Edge{Source: d.u32(ctx + " edge source"), Route: d.u32(ctx + " edge route"), Count: d.u32(ctx + " edge count")}
		if d.err == nil && (int(e.Source) >= len(w.Sources) || int(e.Route) >= len(w.Routes)) {
			d.fail(ctx+" edge", "index (%d,%d) outside %d sources × %d routes", e.Source, e.Route, len(w.Sources), len(w.Routes))
		}
		w.Edges[j] = e
	}
	w.Params = make([]ParamModel, d.count(ctx+" params", 30))
	for j := range w.Params {
		d.param(&w.Params[j], ctx, len(w.Routes))
		if d.err == nil && j > 0 && !paramLess(&w.Params[j-1], &w.Params[j]) {
			d.fail(ctx+" param", "%q on route %d is out of order or repeated", w.Params[j].Name, w.Params[j].Route)
		}
	}
	w.CalBase = d.float(ctx + " calibration base")
	w.CalCenter = d.float(ctx + " calibration center")
	if d.err == nil && !(w.CalBase >= 0 && w.CalCenter > w.CalBase) {
		d.fail(ctx+" calibration", "base %v and center %v must satisfy 0 ≤ base < center", w.CalBase, w.CalCenter)
	}
	w.RespBase = d.float(ctx + " response calibration base")
	w.RespCenter = d.float(ctx + " response calibration center")
	if d.err == nil && !(w.RespBase == 0 && w.RespCenter == 0 || w.RespBase >= 0 && w.RespCenter > w.RespBase) {
		d.fail(ctx+" response calibration", "base %v and center %v must be both 0 or satisfy 0 ≤ base < center", w.RespBase, w.RespCenter)
	}
	d.tails(&w.Tails, ctx)
	w.ValueKeyID = d.u32(ctx + " value key id")
	for j := range w.Params {
		if d.err == nil && w.Params[j].HashEnum && w.ValueKeyID == 0 {
			// Digests under no key could never be looked up.
			d.fail(ctx+" param "+w.Params[j].Name, "enumerates digests, but the workload names no value key")
		}
	}
	if d.err != nil {
		return nil
	}
	if !d.skipIndex {
		w.index()
	}
	return w
}

type decoder struct {
	b    []byte
	off  int
	base int
	err  error
	// skipIndex leaves decoded parts unindexed (not for scoring).
	skipIndex bool
}

func (d *decoder) fail(what, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d: %s", ErrModelFormat, what, d.base+d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(what, "truncated")
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	// A last byte of 0 after others is an overlong encoding: there is one
	// encoding of every number, so a model has one encoding too.
	if n <= 0 || n > 1 && d.b[d.off+n-1] == 0 {
		d.fail(what, "truncated or overlong varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 || n > 1 && d.b[d.off+n-1] == 0 {
		d.fail(what, "truncated or overlong varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail(what, "%d does not fit 32 bits", v)
		return 0
	}
	return uint32(v)
}

// count reads a element count and checks it against the bytes left, given the
// smallest encoding of one element, so a corrupt count cannot make Decode
// allocate more than the input justifies.
func (d *decoder) count(what string, minElemBytes int) int {
	v := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if v > uint64((len(d.b)-d.off)/minElemBytes) {
		d.fail(what, "count %d exceeds what %d remaining bytes can hold", v, len(d.b)-d.off)
		return 0
	}
	return int(v)
}

func (d *decoder) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > maxStringLen || n > uint64(len(d.b)-d.off) {
		d.fail(what, "string of %d bytes (limit %d, %d left)", n, maxStringLen, len(d.b)-d.off)
		return ""
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

// The kinds of a parameter's enumeration (ParamModel).
const (
	enumValues  = 0
	enumShapes  = 1
	enumDigests = 2
)

// fixed64 reads a little-endian 64-bit number.
func (d *decoder) fixed64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail(what, "truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

// float reads a float64 (its bits as fixed64 reads them), refusing NaN and
// infinities.
func (d *decoder) float(what string) float64 {
	f := math.Float64frombits(d.fixed64(what))
	if d.err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
		d.fail(what, "not a finite number")
	}
	return f
}

func appendParam(p []byte, m *ParamModel) []byte {
	p = binary.AppendUvarint(p, uint64(m.Route))
	p = appendString(p, m.Name)
	p = binary.AppendUvarint(p, uint64(m.Count))
	p = appendFloat(p, m.LenMean)
	p = appendFloat(p, m.LenVar)
	p = binary.AppendUvarint(p, uint64(m.KeywordValues))
	p = binary.AppendUvarint(p, uint64(m.KeywordBase))
	nz := 0
	for _, c := range m.Trans {
		if c != 0 {
			nz++
		}
	}
	p = binary.AppendUvarint(p, uint64(nz))
	for i, c := range m.Trans {
		if c != 0 {
			p = binary.AppendUvarint(p, uint64(i))
			p = binary.AppendUvarint(p, uint64(c))
		}
	}
	// The enumerated values themselves, in their hashes' order (codec 9;
	// codec 8 had the hashes alone), after their kind: values, shapes
	// (codec 10) or digests (codec 11), which are the hashes.
	switch {
	case m.HashEnum:
		p = binary.AppendUvarint(p, uint64(len(m.Enum)))
		p = append(p, enumDigests)
		for _, d := range m.Enum {
			p = binary.LittleEndian.AppendUint64(p, d)
		}
	default:
		p = binary.AppendUvarint(p, uint64(len(m.Values)))
		if len(m.Values) > 0 {
			kind := byte(enumValues)
			if m.ShapeEnum {
				kind = enumShapes
			}
			p = append(p, kind)
		}
		for _, v := range m.Values {
			p = appendString(p, v)
		}
	}
	p = binary.AppendUvarint(p, uint64(m.Singletons))
	p = appendFloat32(p, m.TailMed)
	p = appendFloat32(p, m.TailBeta)
	p = binary.AppendUvarint(p, uint64(m.GramTokens))
	p = binary.AppendUvarint(p, uint64(m.GramSingletons))
	p = binary.LittleEndian.AppendUint64(p, m.Lengths)
	return binary.AppendUvarint(p, uint64(m.LenSingletons))
}

func (d *decoder) param(m *ParamModel, ctx string, routes int) {
	m.Route = d.u32(ctx + " param route")
	if d.err == nil && m.Route != AnyRoute && int(m.Route) >= routes {
		d.fail(ctx+" param route", "%d outside %d routes", m.Route, routes)
	}
	m.Name = d.str(ctx + " param name")
	ctx += " param " + m.Name
	m.Count = d.u32(ctx + " count")
	m.LenMean = d.float(ctx + " length mean")
	m.LenVar = d.float(ctx + " length variance")
	m.KeywordValues = d.u32(ctx + " keyword values")
	m.KeywordBase = d.u32(ctx + " keyword base")
	if d.err == nil && (m.LenMean < 0 || m.LenVar < 0 || m.KeywordValues > m.KeywordBase || m.KeywordBase > m.Count) {
		d.fail(ctx, "inconsistent statistics")
	}
	nz := d.count(ctx+" transitions", 2)
	last := -1
	for k := 0; k < nz && d.err == nil; k++ {
		i := d.uvarint(ctx + " transition")
		c := d.u32(ctx + " transition count")
		if d.err == nil && (i >= nTrans || int(i) <= last || c == 0) {
			d.fail(ctx+" transition", "index %d (after %d) or count %d invalid", i, last, c)
			return
		}
		last = int(i)
		m.Trans[i] = c
	}
	ne := d.count(ctx+" enum", 1)
	if ne > maxEnum {
		d.fail(ctx+" enum", "%d values, limit %d", ne, maxEnum)
		return
	}
	if ne > 0 {
		m.Enum = make([]uint64, ne)
		switch kind := d.byte(ctx + " enum kind"); {
		case d.err != nil:
			return
		case kind > enumDigests:
			d.fail(ctx+" enum kind", "%d, want 0 (values), 1 (shapes) or 2 (digests)", kind)
			return
		case kind == enumDigests:
			m.HashEnum = true
			if m.Route == AnyRoute {
				d.fail(ctx+" enum kind", "digests of a header's or the workload's values: only a route's parameters are digested")
				return
			}
			for k := range m.Enum {
				m.Enum[k] = d.fixed64(ctx + " enum digest")
				if d.err == nil && k > 0 && m.Enum[k] <= m.Enum[k-1] {
					d.fail(ctx+" enum", "digests out of order, or repeated")
				}
				if d.err != nil {
					return
				}
			}
		default:
			m.Values = make([]string, ne)
			m.ShapeEnum = kind == enumShapes
		}
	}
	for k := range m.Values {
		m.Values[k] = d.str(ctx + " enum value")
		if d.err != nil {
			return
		}
		if len(m.Values[k]) > MaxValueBytes {
			d.fail(ctx+" enum value", "%d bytes, limit %d", len(m.Values[k]), MaxValueBytes)
			return
		}
		if m.ShapeEnum && !isShape(m.Values[k]) {
			// It could never match: a scored value's shape is looked up.
			d.fail(ctx+" enum value", "%q is not a value's shape", m.Values[k])
			return
		}
		m.Enum[k] = hashBytes(hashSeed, view(m.Values[k]))
		if k > 0 && m.Enum[k] <= m.Enum[k-1] {
			d.fail(ctx+" enum", "values out of their hashes' order, or repeated")
			return
		}
	}
	m.Singletons = d.u32(ctx + " singletons")
	m.TailMed = d.float32(ctx + " tail median")
	m.TailBeta = d.float32(ctx + " tail spread")
	if d.err == nil && (m.TailMed < 0 || m.TailBeta < 0 || m.TailBeta == 0 && m.TailMed != 0) {
		d.fail(ctx+" tail", "median %v and spread %v: want both 0, or a median ≥ 0 and a positive spread", m.TailMed, m.TailBeta)
	}
	m.GramTokens = d.u32(ctx + " trigrams")
	m.GramSingletons = d.u32(ctx + " trigrams seen once")
	if d.err == nil && m.GramSingletons > m.GramTokens {
		d.fail(ctx+" trigrams", "%d seen once of %d", m.GramSingletons, m.GramTokens)
	}
	m.Lengths = d.fixed64(ctx + " lengths")
	m.LenSingletons = d.u32(ctx + " lengths seen once")
	if d.err == nil && (int(m.LenSingletons) > bits.OnesCount64(m.Lengths) || m.Lengths == 0 && m.Count > 0) {
		d.fail(ctx+" lengths", "%d seen once of %d lengths, of %d values", m.LenSingletons, bits.OnesCount64(m.Lengths), m.Count)
	}
}

// appendTails encodes a workload's part tails: for each calibrated part,
// the knot count, then zero, the knots (surprise, tail surprise) and the
// slope as float32s.
func appendTails(p []byte, ts *[NParts]Tail) []byte {
	for part := Part(0); part < NParts; part++ {
		if !part.calibrated() {
			continue
		}
		t := &ts[part]
		p = binary.AppendUvarint(p, uint64(len(t.X)))
		p = appendFloat32(p, t.Zero)
		for i := range t.X {
			p = appendFloat32(p, t.X[i])
			p = appendFloat32(p, t.T[i])
		}
		p = appendFloat32(p, t.Slope)
	}
	return p
}

// tails decodes a workload's part tails, checking that each maps surprises
// to tail surprises monotonically.
func (d *decoder) tails(ts *[NParts]Tail, ctx string) {
	for part := Part(0); part < NParts && d.err == nil; part++ {
		if !part.calibrated() {
			continue
		}
		c := ctx + " " + part.String() + " tail"
		n := d.count(c, 8)
		if d.err == nil && n > maxKnots {
			d.fail(c, "%d knots, limit %d", n, maxKnots)
			return
		}
		t := Tail{Zero: d.float32(c + " zero")}
		if n > 0 {
			t.X, t.T = make([]float32, n), make([]float32, n)
		}
		for i := 0; i < n; i++ {
			t.X[i], t.T[i] = d.float32(c+" knot"), d.float32(c+" knot")
		}
		t.Slope = d.float32(c + " slope")
		if d.err != nil {
			return
		}
		prevX, prevT := float32(0), t.Zero
		ok := t.Zero >= 0 && t.Slope >= 0 && t.Slope <= maxSlope && (t.Slope > 0 || n == 0 && t.Zero == 0)
		for i := 0; i < n && ok; i++ {
			ok = t.X[i] > prevX && t.T[i] >= prevT
			prevX, prevT = t.X[i], t.T[i]
		}
		if !ok {
			d.fail(c, "zero %v, knots %v → %v, slope %v: not a tail", t.Zero, t.X, t.T, t.Slope)
			return
		}
		ts[part] = t
	}
}

func appendNumbers(p []byte, n *Numbers) []byte {
	for _, s := range []*NumStat{&n.RequestBytes, &n.ResponseBytes} {
		p = binary.AppendUvarint(p, uint64(s.N))
		p = appendFloat(p, s.Mean)
		p = appendFloat(p, s.M2)
	}
	for _, c := range n.Status {
		p = binary.AppendUvarint(p, uint64(c))
	}
	return binary.AppendUvarint(p, n.MaxRequestBytes)
}

func (d *decoder) numbers(n *Numbers, ctx string) {
	for _, s := range []*NumStat{&n.RequestBytes, &n.ResponseBytes} {
		s.N = d.u32(ctx + " size count")
		s.Mean = d.float(ctx + " size mean")
		s.M2 = d.float(ctx + " size spread")
		if d.err == nil && (s.Mean < 0 || s.M2 < 0) {
			d.fail(ctx+" size", "negative mean or spread")
		}
	}
	for i := range n.Status {
		n.Status[i] = d.u32(ctx + " status count")
	}
	n.MaxRequestBytes = d.uvarint(ctx + " largest request")
}

func paramLess(a, b *ParamModel) bool {
	if a.Route != b.Route {
		return a.Route < b.Route
	}
	return a.Name < b.Name
}

func appendString(p []byte, s string) []byte {
	p = binary.AppendUvarint(p, uint64(len(s)))
	return append(p, s...)
}

func appendFloat32(p []byte, f float32) []byte {
	return binary.LittleEndian.AppendUint32(p, math.Float32bits(f))
}

func (d *decoder) float32(what string) float32 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 4 {
		d.fail(what, "truncated float")
		return 0
	}
	f := math.Float32frombits(binary.LittleEndian.Uint32(d.b[d.off:]))
	d.off += 4
	if f != f || math.IsInf(float64(f), 0) {
		d.fail(what, "not a finite number")
	}
	return f
}

func appendFloat(p []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(p, math.Float64bits(f))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	return keys
}
