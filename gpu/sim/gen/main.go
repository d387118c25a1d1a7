// Command gen writes gpu/sim/zkernels.c from the kernel sources (make
// sim-kernels). TestGeneratedKernelsUpToDate fails when it is stale.
package main

import (
	"log"
	"os"

	"github.com/mixq/mixq/kernels"
)

func main() {
	src, err := kernels.SimSource("table.h")
	if err != nil {
		log.Fatal(err)
	}
	out := "gpu/sim/zkernels.c"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	if err := os.WriteFile(out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}
