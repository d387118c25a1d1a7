package probe

import "github.com/mixq/mixq/gpu"

// Result is what the probe found. Err says why no device can be used (no
// driver, cuInit failed, no device); Devices may still list devices whose
// compute capability the PTX does not cover (Info.UnsupportedCause).
type Result struct {
	Driver        bool // libcuda.so.1 loaded
	DriverVersion int  // 1000·major + 10·minor, e.g. 12040
	Devices       []gpu.Info
	Err           error
}

// Usable returns the first device the kernels support, or false.
func (r Result) Usable() (gpu.Info, bool) {
	for _, d := range r.Devices {
		if d.UnsupportedCause == "" {
			return d, true
		}
	}
	return gpu.Info{}, false
}
