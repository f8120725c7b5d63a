package datasets

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/meshward/meshward/models"
)

// httpParamsFile is the http_params CSV, relative to the data directory.
const httpParamsFile = "http_params/payload_train.csv"

// loadHTTPParams reads http_params/payload_train.csv (header
// payload,length,attack_type,label). Each row becomes
// GET /form?value=<url.QueryEscape(payload)>. Rows with the wrong number of
// fields, CSV syntax errors, or a label other than "norm"/"anom" are skipped
// and counted. IDs are "http_params:<line>" (the CSV line the row starts on);
// the split key is the payload, so repeated values share a split.
func loadHTTPParams(dir string) ([]Example, Report, error) {
	var rep Report
	f, err := os.Open(filepath.Join(dir, httpParamsFile))
	if err != nil {
		return nil, rep, fmt.Errorf("datasets: %s: %w", HTTPParams, err)
	}
	defer f.Close()

	r := csv.NewReader(f)
	r.FieldsPerRecord = 4
	header, err := r.Read()
	if err != nil {
		return nil, rep, fmt.Errorf("datasets: %s: reading header: %w", HTTPParams, err)
	}
	want := []string{"payload", "length", "attack_type", "label"}
	for i := range want {
		if header[i] != want[i] {
			return nil, rep, fmt.Errorf("datasets: %s: header %q, want %q", HTTPParams, header, want)
		}
	}

	var out []Example
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return nil, rep, fmt.Errorf("datasets: %s: %w", HTTPParams, err)
			}
			reason := "malformed CSV row"
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				reason = "wrong number of fields"
			}
			rep.skip(fmt.Sprintf("%s:%d", httpParamsFile, pe.StartLine), reason)
			continue
		}
		line, _ := r.FieldPos(0)
		payload, attackType, label := rec[0], rec[2], rec[3]
		var attack bool
		switch label {
		case "norm":
			attackType = ""
		case "anom":
			attack = true
		default:
			rep.skip(fmt.Sprintf("%s:%d", httpParamsFile, line), "unknown label")
			continue
		}
		out = append(out, Example{
			ID: fmt.Sprintf("%s:%d", HTTPParams, line),
			Request: models.Request{
				Method:      "GET",
				Path:        "/form",
				Query:       "value=" + url.QueryEscape(payload),
				Headers:     baseHeaders(),
				Source:      source,
				Destination: HTTPParams,
			},
			Attack:     attack,
			AttackType: attackType,
			Split:      SplitOf(HTTPParams, payload),
		})
	}
	return out, rep, nil
}
