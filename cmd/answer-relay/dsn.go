package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/answer-relay/answer-relay/dsn"
)

func init() {
	commands["dsn"] = command{"read bounces: dsn parse FILE... prints one JSON report per file", runDSN}
}

// dsnLine is one output line of "dsn parse": the report plus the file name
// or the error that kept the file from being read.
type dsnLine struct {
	File string `json:"file"`
	*dsn.Report
	Error string `json:"error,omitempty"`
}

func runDSN(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "parse" {
		fmt.Fprintln(stderr, "usage: answer-relay dsn parse FILE...")
		return 2
	}
	files := args[1:]
	if len(files) == 0 {
		fmt.Fprintln(stderr, "usage: answer-relay dsn parse FILE...")
		return 2
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	code := 0
	for _, name := range files {
		if ctx.Err() != nil {
			return 1
		}
		line := dsnLine{File: filepath.Base(name)}
		rep, err := parseFile(name)
		if err != nil {
			line.Error = err.Error()
			code = 1
		} else {
			line.Report = rep
		}
		if err := enc.Encode(line); err != nil {
			fmt.Fprintf(stderr, "answer-relay dsn: %v\n", err)
			return 1
		}
	}
	return code
}

func parseFile(name string) (*dsn.Report, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return dsn.Parse(f)
}
