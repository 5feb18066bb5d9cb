// hello: the baseline. A Go program with no lookups at all.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("hello from cgotrace sample")
	os.Exit(0)
}
