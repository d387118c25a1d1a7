package cpu_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant/quanttest"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the cpu backend")

const goldenDir = "../testdata/golden"

// TestGolden checks the backend against the golden vectors. With -update
// it first rewrites them (go test ./cpu -run TestGolden -update). Without,
// it also checks that the files are exactly what the generator and the
// reference produce now, so that the generator parameters recorded in each
// file stay true and a change of arithmetic cannot go unnoticed.
func TestGolden(t *testing.T) {
	if *update {
		if err := quanttest.WriteGolden(goldenDir, cpu.New(1)); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the golden vectors in %s", goldenDir)
	}
	t.Run("Fresh", func(t *testing.T) {
		files, err := quanttest.GoldenFiles(cpu.New(1))
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(goldenDir, name))
			if err != nil {
				t.Fatalf("%v (run go test ./cpu -run TestGolden -update)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from what the generator and the reference produce now; if the change is intended, run go test ./cpu -run TestGolden -update and review the diff", name)
			}
		}
	})
	for _, threads := range []int{1, 0} {
		quanttest.TestGolden(t, cpu.New(threads), goldenDir)
	}
	quanttest.TestGolden(t, naive{}, goldenDir)
}
