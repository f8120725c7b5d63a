package models

// Route templates fold the variable segments of a path into placeholders,
// judged by shape alone, so that /users/42/orders and /users/7/orders are one
// route. Templating appends to a caller-owned buffer and never allocates.

// Placeholders a variable path segment folds into.
const (
	SegNumber = "{num}"
	SegUUID   = "{uuid}"
	SegHex    = "{hex}"
	SegToken  = "{tok}"
	SegVar    = "{var}" // a position the trainer found too varied to enumerate
)

// MaxRouteBytes bounds a route template; longer paths are cut, and the cut is
// marked with a trailing "/…".
const MaxRouteBytes = 256

// AppendTemplate appends the route template of path to dst.
func AppendTemplate(dst []byte, path string) []byte {
	start := len(dst)
	if path == "" || path[0] != '/' {
		dst = append(dst, '/')
	}
	i := 0
	for i < len(path) {
		if len(dst)-start >= MaxRouteBytes {
			dst = append(dst[:start+MaxRouteBytes], "/…"...)
			break
		}
		if path[i] == '/' {
			dst = append(dst, '/')
			i++
			continue
		}
		j := i
		for j < len(path) && path[j] != '/' {
			j++
		}
		seg := path[i:j]
		if ph := segmentShape(seg); ph != "" {
			dst = append(dst, ph...)
		} else {
			dst = append(dst, seg...)
		}
		i = j
	}
	if len(dst)-start > MaxRouteBytes+len("/…") {
		dst = append(dst[:start+MaxRouteBytes], "/…"...)
	}
	return dst
}

// Template returns the route template of path.
func Template(path string) string {
	var buf [MaxRouteBytes + 8]byte
	return string(AppendTemplate(buf[:0], path))
}

// segmentShape returns the placeholder for a variable-looking segment, or ""
// for a segment that reads as a literal word.
func segmentShape(s string) string {
	n := len(s)
	if n == 0 {
		return ""
	}
	var digits, hexLetters, upper, lower, other, dashes int
	for i := 0; i < n; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'f':
			hexLetters++
			lower++
		case c >= 'A' && c <= 'F':
			hexLetters++
			upper++
		case c >= 'g' && c <= 'z':
			lower++
		case c >= 'G' && c <= 'Z':
			upper++
		case c == '-':
			dashes++
		case c == '_' || c == '=' || c == '+' || c == '.' || c == '~' || c == '%':
			other++
		default:
			return ""
		}
	}
	switch {
	case digits == n:
		return SegNumber
	case n == 36 && dashes == 4 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' && digits+hexLetters == 32:
		return SegUUID
	case n >= 8 && digits > 0 && digits+hexLetters == n:
		return SegHex
	case n >= 16 && digits > 0 && (upper > 0 && lower > 0 || digits*5 >= n):
		// Long mixed tokens (base64-ish ids, hashes, session keys): words
		// this long rarely mix both cases with digits.
		return SegToken
	case n >= 4 && digits > 0 && digits*2 >= n && dashes+other <= 2:
		// Mostly digits with a few letters or separators: order-2024-17, v1x9.
		return SegToken
	}
	return ""
}
