package cli

import (
	"bufio"
	"context"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/server"
)

// docCommand is one `build/meshward …` line of a shell block in a
// document (continuation lines joined), as a user would paste it.
type docCommand struct {
	where string // file:line
	line  string // without the trailing comment
}

// docCommands reads the `build/meshward` commands of a document's sh
// blocks.
func docCommands(t *testing.T, path string) []docCommand {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docCommand
	in, n := false, 0
	var cur *docCommand
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		text := sc.Text()
		if strings.HasPrefix(text, "```") {
			in = strings.TrimPrefix(text, "```") == "sh" && !in
			continue
		}
		if !in {
			continue
		}
		if cur == nil {
			if !strings.HasPrefix(text, "build/meshward ") {
				continue
			}
			cur = &docCommand{where: filepath.Base(path) + ":" + strconv.Itoa(n)}
		}
		body, _, _ := strings.Cut(text, " #")
		body = strings.TrimSpace(body)
		if cont, ok := strings.CutSuffix(body, `\`); ok {
			cur.line += strings.TrimSpace(cont) + " "
			continue
		}
		cur.line += body
		out = append(out, *cur)
		cur = nil
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// live says why a documented command needs something a test on loopback
// cannot stand in for as written (a cluster, a registry, a control plane
// on fixed ports), or "" when it runs offline.
func live(args []string) string {
	for _, a := range args {
		if strings.TrimLeft(a, "-") == "kubeconfig" || a == "-in-cluster" {
			return "a Kubernetes cluster"
		}
		if strings.TrimLeft(a, "-") == "exceptions" {
			return "a running control plane (the file is meshward allow -list -json's)"
		}
	}
	switch {
	case args[0] == "allow" || args[0] == "preview":
		return "a running control plane"
	case args[0] == "serve":
		return "a control plane on fixed ports"
	case args[0] == "status":
		return "a running control plane"
	case args[0] == "secret":
		return "a Kubernetes cluster"
	case len(args) > 1 && args[0] == "image" && args[1] == "push":
		return "a registry"
	}
	return ""
}

// Every offline command the README and docs/cli.md show runs as written,
// in order, in an empty directory holding only build/ (the binary and the
// compiled filter, as `make build` leaves them): each one's outputs are
// the next ones' inputs. The commands that need a live control plane, a
// cluster or a registry are checked as far as they can be here: serve's
// lines use only flags serve defines, with values it accepts.
func TestDocumentedCommandsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs every documented command (about a minute): skipped under -short (make unit); make test runs it")
	}
	root := filepath.Join("..", "..", "..")
	bin := filepath.Join(t.TempDir(), "meshward")
	// As `make build` builds it: static, so `image build` can pack it.
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./control-plane/cmd/meshward")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("flags", func(t *testing.T) { checkDocumentedFlags(t, root, bin) })
	wasm, err := filepath.Abs(testWasm(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"README.md", filepath.Join("docs", "cli.md")} {
		t.Run(filepath.Base(doc), func(t *testing.T) {
			cmds := docCommands(t, filepath.Join(root, doc))
			if len(cmds) < 5 {
				t.Fatalf("%s shows %d meshward commands: the reader changed, or the document did", doc, len(cmds))
			}
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "build"), 0o755); err != nil {
				t.Fatal(err)
			}
			for link, target := range map[string]string{"meshward": bin, "meshward.wasm": wasm} {
				if err := os.Symlink(target, filepath.Join(dir, "build", link)); err != nil {
					t.Fatal(err)
				}
			}
			ran := 0
			for _, c := range cmds {
				args := strings.Fields(strings.TrimPrefix(c.line, "build/meshward "))
				if why := live(args); why != "" {
					if args[0] == "serve" {
						checkServeFlags(t, c, args[1:])
					}
					t.Logf("%s: needs %s: %s", c.where, why, c.line)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", c.line)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				cancel()
				if err != nil {
					t.Fatalf("%s: %s\n%v\n%s", c.where, c.line, err, out)
				}
				ran++
			}
			if ran < 4 {
				t.Fatalf("%s: only %d commands ran offline", doc, ran)
			}
		})
	}
}

// checkServeFlags parses a documented serve line with serve's FlagSet.
func checkServeFlags(t *testing.T, c docCommand, args []string) {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := server.DefaultConfig()
	new(serveFlags).register(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		t.Errorf("%s: %s: %v", c.where, c.line, err)
	}
	if fs.NArg() > 0 {
		t.Errorf("%s: %s: serve takes no arguments, got %q", c.where, c.line, fs.Args())
	}
}

// checkDocumentedFlags: every flag a documented command passes (every
// `build/meshward` line of the README, docs/ and manifests/README.md,
// those that need a live control plane included) is one its subcommand
// lists in its -h.
func checkDocumentedFlags(t *testing.T, root, bin string) {
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "manifests", "README.md"))
	known := map[string]map[string]bool{}
	flagsOf := func(sub []string) map[string]bool {
		key := strings.Join(sub, " ")
		if f, ok := known[key]; ok {
			return f
		}
		// -h prints the FlagSet and exits 2 (flag.ErrHelp); the listing is what counts.
		out, _ := exec.Command(bin, append(append([]string{}, sub...), "-h")...).CombinedOutput()
		f := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if m := helpFlag.FindStringSubmatch(line); m != nil {
				f[m[1]] = true
			}
		}
		if len(f) == 0 {
			t.Errorf("meshward %s -h lists no flags:\n%s", key, out)
		}
		known[key] = f
		return f
	}
	n := 0
	for _, doc := range docs {
		for _, c := range docCommands(t, doc) {
			args := strings.Fields(strings.TrimPrefix(c.line, "build/meshward "))
			sub := args[:1]
			if len(args) > 1 && !strings.HasPrefix(args[1], "-") && (args[0] == "model" || args[0] == "image" || args[0] == "policy") {
				sub = args[:2]
			}
			f := flagsOf(sub)
			for _, a := range args[len(sub):] {
				if !strings.HasPrefix(a, "-") || a == "-" {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !f[name] {
					t.Errorf("%s: meshward %s has no flag -%s: %s", c.where, strings.Join(sub, " "), name, c.line)
				}
			}
			n++
		}
	}
	if n < 20 {
		t.Fatalf("only %d documented commands found", n)
	}
	t.Logf("%d documented commands' flags checked against %d subcommands' -h", n, len(known))
}

// helpFlag matches a flag in a FlagSet's usage listing ("  -name value").
var helpFlag = regexp.MustCompile(`^\s+-{1,2}([A-Za-z0-9][\w.-]*)`)
