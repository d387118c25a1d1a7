// Command mixq quantizes model checkpoints to mixed INT4/INT8/F16 precision.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
