package models

// The content model's lexicon: words that mean something to an interpreter
// and little in ordinary text — SQL functions and schema names, shell
// commands, code-execution and deserialisation names (PHP, Java, template
// engines), script and markup names. keywords (keywords.go) holds operators
// and the commonest words, matched anywhere; these are matched as whole
// words (a run of letters, digits and '_'), case-insensitively, so "cat"
// counts in "cat /etc/hosts" but not in "category".

const (
	lexSQL = iota
	lexShell
	lexCode
	lexScript
)

var lexiconWords = [...][]string{
	lexSQL: {
		"union", "select", "sleep", "benchmark", "waitfor", "pg_sleep", "information_schema", "sysobjects",
		"syscolumns", "sqlite_master", "xp_cmdshell", "sp_executesql", "load_file", "outfile", "dumpfile",
		"concat", "concat_ws", "group_concat", "substr", "substring", "mid", "ascii", "unhex", "hex", "char",
		"chr", "nchar", "extractvalue", "updatexml", "xor", "having", "tablename", "table_name",
		"column_name", "dbms_pipe", "utl_inaddr", "randomblob", "md5", "sha1", "version", "database",
		"current_user", "session_user", "system_user", "user_name", "schema", "procedure", "declare",
		"exec", "execute", "truncate", "drop", "alter", "cast", "convert", "coalesce", "ifnull", "nullif",
		"isnull", "iif", "if", "elt", "make_set", "rlike", "regexp", "sounds", "pg_read_file", "lo_import",
		"copy", "dblink", "openrowset", "opendatasource", "bulk", "shutdown", "null", "true", "false",
	},
	lexShell: {
		"sh", "bash", "zsh", "ksh", "csh", "dash", "cmd", "powershell", "pwsh", "cat", "tac", "ls", "dir",
		"id", "whoami", "uname", "hostname", "ifconfig", "ipconfig", "netstat", "ps", "kill", "pkill",
		"wget", "curl", "nc", "ncat", "netcat", "telnet", "ssh", "scp", "ftp", "tftp", "nslookup", "dig",
		"ping", "traceroute", "chmod", "chown", "rm", "mv", "cp", "mkdir", "touch", "echo", "printf",
		"perl", "python", "python3", "ruby", "php", "node", "lua", "awk", "gawk", "sed", "grep", "find",
		"xargs", "tar", "gzip", "base64", "xxd", "od", "head", "tail", "more", "less", "vi", "vim",
		"nano", "env", "export", "set", "sudo", "su", "passwd", "shadow", "crontab", "nohup", "sleep",
		"net", "reg", "wmic", "certutil", "bitsadmin", "rundll32", "regsvr32", "mshta", "cscript",
		"wscript", "systeminfo", "tasklist", "taskkill", "bin", "usr", "etc", "tmp", "proc", "dev",
	},
	lexCode: {
		"system", "exec", "passthru", "shell_exec", "popen", "proc_open", "pcntl_exec", "assert",
		"eval", "base64_decode", "gzinflate", "gzuncompress", "str_rot13", "phpinfo", "file_get_contents",
		"file_put_contents", "fopen", "fwrite", "readfile", "include", "require", "include_once",
		"require_once", "preg_replace", "create_function", "call_user_func", "unserialize", "serialize",
		"highlight_file", "show_source", "php", "phar", "expect", "java", "javax", "lang", "runtime",
		"getruntime", "processbuilder", "classloader", "forname", "newinstance", "getclass", "reflect",
		"invoke", "jndi", "ldap", "rmi", "iiop", "ognl", "xwork", "struts", "spring", "freemarker",
		"velocity", "thymeleaf", "jinja", "twig", "__class__", "__mro__", "__subclasses__",
		"__globals__", "__builtins__", "__import__", "subprocess", "os", "popen2", "getattr", "import",
		"constructor", "prototype", "__proto__", "require", "child_process", "process", "mainmodule",
	},
	lexScript: {
		"script", "javascript", "vbscript", "alert", "prompt", "confirm", "onerror", "onload",
		"onmouseover", "onfocus", "onclick", "onmouseenter", "onanimationstart", "ontoggle", "iframe",
		"frame", "frameset", "img", "svg", "object", "embed", "applet", "meta", "base", "form",
		"document", "cookie", "domain", "window", "location", "fromcharcode", "innerhtml", "outerhtml",
		"srcdoc", "xlink", "expression", "settimeout", "setinterval", "atob", "btoa", "fetch",
		"xmlhttprequest", "entity", "doctype", "cdata", "xsl", "xinclude",
	},
}

// The lexicon is an open-addressing table of word hashes (FNV-1a over the
// lower-cased bytes, as contentAcc computes them while reading a value), so
// looking a word up costs one probe and no string.
const (
	lexSeed    = 14695981039346656037
	lexPrime   = 1099511628211
	lexSlots   = 1024
	lexMask    = lexSlots - 1
	maxLexWord = 24
)

type lexEntry struct {
	hash  uint64
	kinds uint8
}

var lexTable = func() (t [lexSlots]lexEntry) {
	for kind, words := range lexiconWords {
		for _, w := range words {
			h := uint64(lexSeed)
			for i := 0; i < len(w); i++ {
				h = (h ^ uint64(w[i])) * lexPrime
			}
			for j := h & lexMask; ; j = (j + 1) & lexMask {
				if t[j].hash == h || t[j].hash == 0 {
					t[j].hash = h
					t[j].kinds |= 1 << kind
					break
				}
			}
		}
	}
	return t
}()

// lexKinds returns the kinds of the word with hash h, or 0.
func lexKinds(h uint64) uint8 {
	for j := h & lexMask; ; j = (j + 1) & lexMask {
		switch e := &lexTable[j]; e.hash {
		case h:
			return e.kinds
		case 0:
			return 0
		}
	}
}

// lexShape marks, per word length, the first ([0]) and last ([1]) bytes of
// the lexicon's words of that length, in either case: a word that matches
// no lexicon word there is not looked up.
var lexShape = func() (t [maxLexWord + 1][2][4]uint64) {
	mark := func(s *[4]uint64, c byte) {
		s[c>>6] |= 1 << (c & 63)
		if c >= 'a' && c <= 'z' {
			u := c - 'a' + 'A'
			s[u>>6] |= 1 << (u & 63)
		}
	}
	for _, words := range lexiconWords {
		for _, w := range words {
			if len(w) <= maxLexWord {
				mark(&t[len(w)][0], w[0])
				mark(&t[len(w)][1], w[len(w)-1])
			}
		}
	}
	return t
}()
