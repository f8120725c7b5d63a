package models

// Keywords are the tokens interpreters give meaning to: SQL, shell, script
// and path traversal. They are counted case-insensitively in one pass over a
// value with a first-byte index, without regular expressions or allocation.
// Ordinary words that happen to be keywords ("select", "union") are common in
// benign text too, which is why a keyword adds surprise only in proportion to
// how rare keywords were in that parameter's normal values.
var keywords = []string{
	// SQL
	"select", "union", "insert", "update", "delete", "drop ", "from ", "where ", " or ", " and ",
	"--", "/*", "*/", "sleep(", "benchmark(", "waitfor", "information_schema", "char(", "concat(",
	"0x", "having ", "order by", "group by", "exec(", "xp_", "@@", "case when", "null", "' ", "'=", "1=1",
	// shell
	";", "|", "&&", "`", "$(", "${", "/bin/", "cmd", "powershell", "wget ", "curl ", "nc ", "bash",
	"/etc/", "passwd", "win.ini", "system(",
	// traversal
	"../", "..\\", "..%2f", "%2e%2e", "file:",
	// script and markup
	"<script", "javascript:", "onerror", "onload", "alert(", "<iframe", "<img", "<svg", "document.",
	"eval(", "src=", "href=", "<!--", "<?", "%3c", "&#", "\\u00", "<body", "style=", "expression(",
}

// keywordIndex lists, for each lower-case first byte, the keywords that start
// with it.
var keywordIndex = func() (idx [256][]uint8) {
	for i, k := range keywords {
		c := lower(k[0])
		idx[c] = append(idx[c], uint8(i))
	}
	return idx
}()

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// keywordSingle counts, for each lower-case byte, the one-byte keywords equal
// to it; keywordPairs has a bit set for the first two lower-case bytes of
// every longer keyword. Most positions of a value start no keyword, and the
// pair test rejects them without walking the candidates (in WebAssembly the
// walk is what made keyword counting the costliest part of judging a value).
var keywordSingle, keywordPairs = func() (single [256]uint8, pairs [256 * 256 / 64]uint64) {
	for _, k := range keywords {
		if len(k) == 1 {
			single[k[0]]++
			continue
		}
		i := int(k[0])<<8 | int(k[1])
		pairs[i>>6] |= 1 << (i & 63)
	}
	return single, pairs
}()

// countKeywords counts keyword occurrences in v, case-insensitively.
func countKeywords(v []byte) int {
	n := 0
	for i := 0; i < len(v); i++ {
		c := lower(v[i])
		n += int(keywordSingle[c])
		if i+1 == len(v) {
			break
		}
		if p := int(c)<<8 | int(lower(v[i+1])); keywordPairs[p>>6]&(1<<(p&63)) == 0 {
			continue
		}
		for _, k := range keywordIndex[c] {
			if kw := keywords[k]; len(kw) > 1 && hasPrefixFold(v[i:], kw) {
				n++
			}
		}
	}
	return n
}

func hasPrefixFold[T string | []byte](v T, kw string) bool {
	if len(v) < len(kw) {
		return false
	}
	for j := 0; j < len(kw); j++ {
		if lower(v[j]) != kw[j] {
			return false
		}
	}
	return true
}
