package gpu

// BenchOptions selects the GPU benchmarks.
type BenchOptions struct {
	Ordinal int
	Quick   bool
	// Iters is the number of timed repetitions per row (median reported).
	Iters int
}

// BenchRow is one GPU measurement. Times are medians of event-timed
// repetitions on device-resident data unless the op says "e2e".
type BenchRow struct {
	Op        string  `json:"op"`
	Precision string  `json:"precision,omitempty"`
	Shape     string  `json:"shape"`
	Bytes     int64   `json:"bytes"` // bytes the op must move (read + written)
	Seconds   float64 `json:"seconds"`
	GBps      float64 `json:"gb_per_s"`
	// VsCopy is GBps over the device-to-device copy bandwidth of the same run.
	VsCopy float64 `json:"vs_copy,omitempty"`
	// FloorSeconds is bytes / copy bandwidth: the fastest the op could be.
	FloorSeconds float64 `json:"floor_seconds,omitempty"`
	// Speedup is the baseline's time over this row's (GEMV vs cuBLAS SGEMV).
	Speedup float64 `json:"speedup,omitempty"`
	Note    string  `json:"note,omitempty"`
}
