package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPaddedFormThroughTheCLI: trained on form posts with meshward train,
// a payload after 700 benign pairs scores within 0.05 of the payload
// alone, through meshward replay with the native runner and the compiled
// filter alike, and the two agree.
func TestPaddedFormThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	words := []string{"shoes", "boots", "red", "lamp", "garden", "coffee", "table", "desk"}
	line := func(w *bytes.Buffer, body, label string) {
		rec := map[string]any{"src": "frontend", "dst": "shop", "method": "POST", "path": "/search", "body": body,
			"headers": [][2]string{{"content-type", "application/x-www-form-urlencoded"}, {"user-agent", "Go-http-client/1.1"}}}
		if label != "" {
			rec["label"] = label
		}
		b, _ := json.Marshal(rec)
		w.Write(append(b, '\n'))
	}
	var train bytes.Buffer
	for i := 0; i < 3000; i++ {
		line(&train, fmt.Sprintf("q=%s&n=%d", words[i*7%len(words)], i%100), "")
	}
	trainPath, modelPath := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "model.bin")
	if err := os.WriteFile(trainPath, train.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := Main([]string{"train", "-out", modelPath, trainPath}, &out, &errOut); err != nil {
		t.Fatalf("train: %v\n%s", err, errOut.String())
	}
	payload := "q=" + url.QueryEscape("1' OR '1'='1' UNION SELECT username,password FROM users--")
	var test bytes.Buffer
	line(&test, payload, "sqli")
	line(&test, strings.Repeat("q=shoes&", 700)+payload, "sqli")
	line(&test, "q=lamp&n=3", "normal")
	testPath := filepath.Join(dir, "test.jsonl")
	if err := os.WriteFile(testPath, test.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	scores := map[string][]float64{}
	for _, runner := range []string{"native", "wasm"} {
		path := filepath.Join(dir, runner+".scores")
		args := []string{"replay", "-model", modelPath, "-runner", runner, "-scores", path, testPath}
		if runner == "wasm" {
			args = append(args[:len(args)-1], "-wasm", testWasm(t), testPath)
		}
		if err := Main(args, &out, &errOut); err != nil {
			t.Fatalf("replay -runner %s: %v\n%s", runner, err, errOut.String())
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l struct{ Score float64 }
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatal(err)
			}
			scores[runner] = append(scores[runner], l.Score)
		}
		f.Close()
		s := scores[runner]
		if len(s) != 3 || s[0] <= 0.5 || math.Abs(s[0]-s[1]) > 0.05 || s[2] > 0.5 {
			t.Errorf("%s: payload alone %v, padded, benign: want both payloads flagged within 0.05, the benign one not", runner, s)
		}
	}
	for i := range scores["native"] {
		if math.Abs(scores["native"][i]-scores["wasm"][i]) > 0.002 {
			t.Errorf("request %d: native %.4f, wasm %.4f", i, scores["native"][i], scores["wasm"][i])
		}
	}
	// The same requests as a raw HTTP capture (pcap and raw files share its
	// parser): read as far as the filter reads, they score the same.
	var raw bytes.Buffer
	for _, body := range []string{payload, strings.Repeat("q=shoes&", 700) + payload, "q=lamp&n=3"} {
		fmt.Fprintf(&raw, "POST /search HTTP/1.1\r\nHost: shop\r\nUser-Agent: Go-http-client/1.1\r\n"+
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	rawPath, rawScores := filepath.Join(dir, "test.http"), filepath.Join(dir, "raw.scores")
	if err := os.WriteFile(rawPath, raw.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Main([]string{"replay", "-model", modelPath, "-src", "frontend", "-dst", "shop", "-scores", rawScores, rawPath}, &out, &errOut); err != nil {
		t.Fatalf("replay of the capture: %v\n%s", err, errOut.String())
	}
	b, err := os.ReadFile(rawScores)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d scores of the capture: %s", len(lines), b)
	}
	for i, l := range lines {
		var sc struct{ Score float64 }
		if err := json.Unmarshal([]byte(l), &sc); err != nil {
			t.Fatal(err)
		}
		if math.Abs(sc.Score-scores["native"][i]) > 0.002 {
			t.Errorf("captured request %d scores %.4f, %.4f from JSONL", i, sc.Score, scores["native"][i])
		}
	}
}
