package main

import (
	"fmt"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/internal/safeout"
)

// checkOutput is the rule for every output of every command (see
// internal/safeout): it may not be, contain or lie inside any input, and an
// existing one is replaced only with --force and only when mixq wrote it.
// Commands call it before any long work, so a refusal costs nothing.
func checkOutput(path string, kind safeout.Kind, force bool, inputs ...string) error {
	if err := safeout.Check(path, kind, force, inputs...); err != nil {
		return err
	}
	// A read-only destination is found now, not after an hour of work.
	return safeout.CheckWritable(path)
}

// modelInputs lists what model paths given on the command line stand for
// (see mixq.InputPaths); empty paths are skipped.
func modelInputs(paths ...string) []string {
	var ins []string
	for _, p := range paths {
		if p != "" {
			ins = append(ins, mixq.InputPaths(p)...)
		}
	}
	return ins
}

// inputs are the files the importance flags read.
func (f *importanceFlags) inputs() []string {
	return append([]string{f.calibTokens, f.grads}, f.calib...)
}

// inputs are the files the policy flags read.
func (f *planFlags) inputs() []string {
	return append([]string{f.rulesFile}, f.imp.inputs()...)
}

// notice prints a one-line notice from the pipeline on stderr.
func notice(s string) { fmt.Fprintf(notices, "mixq: notice: %s\n", s) }
