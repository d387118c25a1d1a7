package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/backend"
	"github.com/mixq/mixq/cuda/probe"
	"github.com/mixq/mixq/gpu"
)

// devicesReport is what mixq devices prints (and --json writes).
type devicesReport struct {
	Backends []backendStatus `json:"backends"`
	Driver   string          `json:"cuda_driver,omitempty"`
	Devices  []gpu.Info      `json:"cuda_devices"`
}

type backendStatus struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Detail    string `json:"detail"`
}

func newDevicesCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "devices",
		Short: "List the compute backends and CUDA devices this machine can use",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			rep := devicesReport{Devices: []gpu.Info{}}
			rep.Backends = append(rep.Backends, backendStatus{
				Name: "cpu", Available: true,
				Detail: fmt.Sprintf("%d threads, %s/%s", runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH),
			})
			r := probe.Run()
			if r.Driver && r.DriverVersion > 0 {
				rep.Driver = gpu.DriverString(r.DriverVersion)
			}
			rep.Devices = append(rep.Devices, r.Devices...)
			cuda := backendStatus{Name: "cuda"}
			if p, err := backend.CUDAPlugin(); err != nil {
				cuda.Detail = err.Error()
			} else {
				cuda.Available, cuda.Detail = true, "plugin "+p.Path
			}
			rep.Backends = append(rep.Backends, cuda)
			if asJSON {
				return writeJSON(c.OutOrStdout(), rep)
			}
			tw := newTable(c.OutOrStdout())
			fmt.Fprintln(tw, "BACKEND\tAVAILABLE\tDETAIL")
			for _, b := range rep.Backends {
				fmt.Fprintf(tw, "%s\t%v\t%s\n", b.Name, b.Available, b.Detail)
			}
			if len(rep.Devices) > 0 {
				fmt.Fprintln(tw, "\nGPU\tNAME\tCOMPUTE\tMEMORY\tSMS\tDRIVER\tPTX")
				for _, d := range rep.Devices {
					ptx := d.PTXArchitecture
					if d.UnsupportedCause != "" {
						ptx = "unsupported"
					}
					fmt.Fprintf(tw, "%d\t%s\t%d.%d\t%.1f GiB\t%d\t%s\t%s\n", d.Ordinal, d.Name, d.Major, d.Minor,
						float64(d.TotalMemory)/(1<<30), d.MultiProcessors, gpu.DriverString(d.DriverVersion), ptx)
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
