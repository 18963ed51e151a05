package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

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
	// Files are parsed by one worker per CPU and printed in the order
	// given: dsn.Parse keeps no shared state.
	workers := min(runtime.GOMAXPROCS(0), len(files))
	lines := make([]chan dsnLine, len(files))
	for i := range lines {
		lines[i] = make(chan dsnLine, 1)
	}
	next := make(chan int)
	// At most window reports wait to be printed, so that one slow file
	// does not let the others pile up in memory.
	window := make(chan struct{}, 4*workers)
	go func() {
		defer close(next)
		for i := range files {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for w := 0; w < workers; w++ {
		go func() {
			for i := range next {
				line := dsnLine{File: filepath.Base(files[i])}
				rep, err := parseFile(files[i])
				if err != nil {
					line.Error = err.Error()
				} else {
					line.Report = rep
				}
				lines[i] <- line
			}
		}()
	}
	for i := range files {
		var line dsnLine
		select {
		case line = <-lines[i]:
		case <-ctx.Done():
			return 1
		}
		<-window
		if line.Error != "" {
			code = 1
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
